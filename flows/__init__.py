"""Dataflows of the platform: one package per flow (``flows/<name>/flow.py`` declares it, ``logic.py`` holds its
pure functions), and ``flows/_common`` for what every flow shares (decode-or-dead-letter, the flow entry point)."""
