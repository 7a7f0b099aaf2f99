"""fedfraud: privacy-hardened federated fraud detection on Flower.

This package is the operations layer: the ``fedfraud`` command, provisioning,
the simulation and deployment launchers, status and comparison. It may import
every other package; no other package imports it (``tests/test_layering.py``
holds the contracts).
"""

from core import __version__

__all__ = ["__version__"]
