"""One table of exit codes: each error family owns its code, and every entry point ends the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import audit.errors
import core.errors
import policy.errors
from core.errors import ConfigError, FedFraudError, InputError, UsageError

ROOT = Path(__file__).resolve().parent.parent


def _families() -> dict[int, set[str]]:
    """Each exit code with the roots of the error classes that declare it."""
    found: dict[int, set[str]] = {}
    for module in (core.errors, audit.errors, policy.errors):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, FedFraudError) and "exit_code" in value.__dict__:
                code = value.exit_code
                root = next(c for c in reversed(value.__mro__) if issubclass(c, FedFraudError) and c.exit_code == code)
                found.setdefault(code, set()).add(root.__name__)
    return found


def test_each_exit_code_belongs_to_one_family() -> None:
    families = _families()
    assert {code: len(roots) for code, roots in families.items()} == dict.fromkeys(families, 1)
    assert families[2] == {"UsageError"}
    assert families[9] == {"ConfigError"}
    # Nothing the product raises on purpose shares the command line's usage code by accident.
    assert ConfigError.exit_code != UsageError.exit_code


def test_a_second_family_cannot_take_a_code() -> None:
    with pytest.raises(TypeError, match="exit_code 3 is already InputError's"):
        type("Clash", (ConfigError,), {"exit_code": 3})


def test_a_family_member_may_repeat_its_own_code() -> None:
    member = type("Narrower", (InputError,), {"exit_code": InputError.exit_code})
    assert member.exit_code == 3


def test_codes_stay_in_the_shells_range() -> None:
    with pytest.raises(TypeError, match="1..125"):
        type("Huge", (FedFraudError,), {"exit_code": 200})


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        # A usage error from click, a ConfigError from the settings, through the same mapping.
        (["fedfraud.cli", "demo", "--no-such-option"], 2),
        (["fedfraud.cli", "demo", "--set", "no-such-key=1", "--rounds", "1"], 9),
        (["fedfraud.provision", "show", "/nonexistent-fedfraud-folder"], 3),
    ],
)
def test_every_entry_point_maps_errors_the_same_way(argv: list[str], code: int, tmp_path: Path) -> None:
    module, *args = argv
    runner = f"import sys; sys.argv[0] = {module!r}; from {module} import main; main()"
    done = subprocess.run([sys.executable, "-c", runner, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
