"""Signed, hash-chained, witnessed audit logs of federated runs.

Safe entry points:

* :class:`audit.run.RunAuditor` - the server records a run;
* :func:`audit.receipt.make_receipt` - an institution signs its participation;
* :class:`audit.witness.InstitutionWitness` - an institution countersigns checkpoints;
* :func:`audit.verify.verify` / :func:`audit.verify.verify_log` - a compliance
  officer verifies a log (raises / returns a report with one verdict).

Lower-level pieces (:mod:`audit.merkle`, :mod:`audit.canonical`,
:mod:`audit.record`) are building blocks; use them only through the above
unless you know why.  This package imports only the standard library,
``cryptography`` and :mod:`core.errors` (plus typer/rich in ``audit.cli``).
"""

from __future__ import annotations

__all__ = ["FORMAT_VERSION"]

#: Version marker of the record format (also in every record's ``v``).
FORMAT_VERSION = "fedfraud-audit/1"
