"""vpp: a virtual power plant stream-processing platform (core: config, serde, local stack, CLI)."""

__version__ = "0.1.0"
