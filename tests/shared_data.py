"""Where the suite finds the data files it is given, which this repository does not hold.

The public insurance claims file (1,000 rows, a fraud label; no licence is
stated for the data, so it is not copied here) lies beside the project in
``../shared/data/insurance_claims/``, as on the CI machine. Elsewhere, point
``FEDFRAUD_INSURANCE_CLAIMS`` at a copy. ``tests/conftest.py`` checks the
file's SHA-256 (the one its PROVENANCE.md states) before any test runs, so a
missing or different file stops the suite with one message naming it, not
with a failure in every test that reads it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Environment variable naming the insurance claims CSV when it is not beside the project.
INSURANCE_ENV = "FEDFRAUD_INSURANCE_CLAIMS"
INSURANCE_CSV = Path(
    os.environ.get(INSURANCE_ENV) or REPO.parent / "shared" / "data" / "insurance_claims" / "insurance_claims.csv"
)
#: From the file's PROVENANCE.md.
INSURANCE_SHA256 = "83a434a60e62eb0b2c6ddd4f33f7e6606a8592c151850135d009e49f5081744a"


def insurance_problem() -> str | None:
    """Why the suite cannot use the insurance claims file (``None`` if it can)."""
    where = f"set {INSURANCE_ENV} to a copy of it, or put the project beside shared/data/"
    if not INSURANCE_CSV.is_file():
        return f"the insurance claims CSV is not at {INSURANCE_CSV}; {where}"
    digest = hashlib.sha256(INSURANCE_CSV.read_bytes()).hexdigest()
    if digest != INSURANCE_SHA256:
        return f"{INSURANCE_CSV} is not the insurance claims file the tests expect (sha256 {digest}); {where}"
    return None
