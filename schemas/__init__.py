"""Avro schemas (``*.avsc``): the source of truth for every topic. Loaded by ``vpp.serde``."""
