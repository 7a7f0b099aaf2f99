"""``python -m fedfraud``: the same as the ``fedfraud`` command."""

from fedfraud.cli import main

main()
