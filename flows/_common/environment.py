"""`flow`: the module attribute `python -m bytewax.run flows.<name>.flow:flow` asks for."""


def flow_from_environment(build_flow):
    """A module ``__getattr__`` giving ``flow``: ``build_flow(Settings.load())`` on first access only.

    Each flow module sets ``__getattr__ = flow_from_environment(build_flow)`` so that
    ``python -m bytewax.run flows.<name>.flow:flow`` works while importing the module reads no settings.
    """

    def __getattr__(name: str):
        if name == "flow":
            from vpp.config import Settings

            return build_flow(Settings.load())
        raise AttributeError(name)

    return __getattr__
