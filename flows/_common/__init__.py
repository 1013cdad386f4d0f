"""What every flow shares: decode-or-dead-letter, the module-level ``flow`` entry point, static registries."""
