"""I/O adapters: bytewax sinks (and the sources they pair with) for Kafka, files, PostgreSQL and the time-series store."""
