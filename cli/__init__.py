"""Command-line modules of the newer features (each exposes ``add_commands(subparsers)``)."""
