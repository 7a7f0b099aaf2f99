"""Dishonest-server attacks against SecAgg+ clients (stock Flower and ours)."""
