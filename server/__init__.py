"""The aggregator side: the Flower ServerApp, its strategy and the round loop."""
