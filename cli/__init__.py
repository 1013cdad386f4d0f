"""Sub-commands of `vpp` added by new features (each module: add_commands(subparsers)); listed in vpp.cli.COMMAND_MODULES."""
