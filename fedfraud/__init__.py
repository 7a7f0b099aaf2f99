"""fedfraud: privacy-hardened federated fraud detection on Flower.

This package holds the product's front door (the ``fedfraud`` command) and the
few things every other package shares: the version and the error hierarchy.
It imports nothing heavy at import time.
"""

__version__ = "0.1.0"
