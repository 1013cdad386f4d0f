"""The market simulator: a 5-minute real-time market at one pricing node.

- ``prices``: the price generator (pure, deterministic under a seed);
- ``clearing``: the market's rules (gate closure, bid validation, awards; pure);
- ``api``: the in-memory market with its journal, the HTTP API and the
  publisher of bids, prices and awards to Kafka;
- ``cli``: ``vpp market``.
"""
