"""Cryptographic side of fedfraud: SecAgg+ settings and hardening, CKKS, keys.

Nothing here imports Flower, the server or the client: these modules take
plain values and arrays and are tested on their own.
"""
