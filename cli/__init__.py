"""The `vpp` command line: a thin layer over flows, sinks, models and the development tools."""
