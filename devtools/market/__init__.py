"""The market simulator: a real-time market at one pricing node, of 5-minute intervals or longer ones (15 min, 1 h).

- ``prices``: the price generator (pure, deterministic under a seed);
- ``clearing``: the market's rules (gate closure, bid validation, awards; pure);
- ``api``: the in-memory market with its journal, the HTTP API and the
  publisher of bids, prices and awards to Kafka;
- ``cli``: ``vpp market``.
"""
