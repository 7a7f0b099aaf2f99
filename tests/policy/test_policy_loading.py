"""Loading policy files: valid and invalid vectors, hostile inputs, error messages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.errors import ConfigError, InputError
from policy import MAX_POLICY_BYTES, Policy, PolicyFileError, load_policy, parse_policy

VECTORS = Path(__file__).resolve().parent / "vectors"
VALID = sorted((VECTORS / "valid").glob("*.toml"))
INVALID = sorted((VECTORS / "invalid").glob("*.toml"))


def _expectations(path: Path) -> tuple[str, str]:
    """Read the ``# expect-error`` and ``# expect-field`` header of an invalid vector."""
    lines = path.read_text(encoding="utf-8").splitlines()
    kind = lines[0].removeprefix("# expect-error: ").strip()
    field = lines[1].removeprefix("# expect-field: ").strip()
    return kind, field


def _assert_clean(message: str, source: str) -> None:
    """A message for people: names the file, no raw pydantic dump, no traceback."""
    assert source in message
    assert "Traceback" not in message
    assert "pydantic" not in message.lower()
    assert "For further information" not in message
    assert "input_value" not in message


def test_vectors_exist() -> None:
    assert len(VALID) >= 4
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_vector_loads(path: Path) -> None:
    policy = load_policy(path)

    assert isinstance(policy, Policy)
    assert len(policy.policy_hash) == 64


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_vector_fails_naming_the_field(path: Path) -> None:
    kind, field = _expectations(path)

    with pytest.raises((PolicyFileError, InputError)) as caught:
        load_policy(path)

    error = caught.value
    assert type(error).__name__ == kind
    _assert_clean(str(error), str(path))
    if isinstance(error, PolicyFileError):
        assert field in [problem.field for problem in error.problems], str(error)
        assert isinstance(error, ConfigError)
        assert error.exit_code == 9
        for problem in error.problems:
            assert problem.file == str(path)
            assert "\n" not in problem.reason
            # Every problem line names the file and the field.
            assert str(problem) == f"{path}: {problem.field}: {problem.reason}"
    else:
        assert field in str(error)
        assert error.exit_code == 3
        assert "\n" not in str(error)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = (VECTORS / "valid" / "minimal_bank.toml").read_text(encoding="utf-8")
    text = text.replace("max_rounds = 20", 'max_rounds = "many"')
    text = text.replace("retention_days = 365", "retention_days = 30")
    text = text.replace('id = "bank-a"', 'id = "Bank A"')
    text = text.replace("valid_from = 2026-01-01T00:00:00Z", "valid_from = 2026-01-01T00:00:00")
    text = text.replace("min_partners = 1", "min_partners = 1\nmin_partner = 2")
    path = tmp_path / "many.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(PolicyFileError) as caught:
        load_policy(path)

    fields = {problem.field for problem in caught.value.problems}
    assert fields == {
        "protection.max_rounds",
        "audit.retention_days",
        "identity.id",
        "identity.valid_from",
        "data_use.min_partner",
    }
    assert "did you mean 'min_partners'" in str(caught.value)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{path}: invalid policy (5 problems)"
    assert len(lines) == 6


def test_cross_field_rules_are_all_reported_together(
    make_document: Callable[..., dict[str, Any]],
) -> None:
    document = make_document(
        data_use={
            "forbidden_features": ["amount", "iban"],
            "accepted_partners": ["bank-a", "bank-b"],
            "min_partners": 1,
        },
        protection={"min_cohort_size": 2, "min_secagg_threshold": 2},
        outputs={"model_recipients": ["stranger-bank"]},
    )
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(_toml(document), source="cross.toml")

    fields = [problem.field for problem in caught.value.problems]
    assert fields == ["data_use.allowed_features"]  # section rules run first ...

    document["data_use"]["forbidden_features"] = ["iban"]
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(_toml(document), source="cross.toml")

    # ... then every cross-section rule, all at once.
    fields = [problem.field for problem in caught.value.problems]
    assert fields == ["data_use.accepted_partners", "outputs.model_recipients"]


def test_model_validate_applies_the_same_rules(
    make_document: Callable[..., dict[str, Any]],
) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        Policy.model_validate(make_document(audit={"retention_days": 10}))


# -- hostile input ---------------------------------------------------------------


def test_file_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.toml"
    # Valid TOML, so only the size check can refuse it.
    with path.open("w", encoding="utf-8") as handle:
        handle.write("schema_version = 1\n")
        handle.write("# " + "x" * (MAX_POLICY_BYTES + 10) + "\n")

    with pytest.raises(InputError) as caught:
        load_policy(path)

    assert "larger than" in str(caught.value)
    _assert_clean(str(caught.value), str(path))


def test_file_exactly_at_the_limit_is_parsed(tmp_path: Path) -> None:
    source = (VECTORS / "valid" / "minimal_bank.toml").read_bytes()
    padding = MAX_POLICY_BYTES - len(source) - 3
    path = tmp_path / "padded.toml"
    path.write_bytes(source + b"\n# " + b"p" * padding)
    assert path.stat().st_size == MAX_POLICY_BYTES

    assert load_policy(path).institution_id == "bank-a"


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 5000 + "]" * 5000,
        "x = " + "{a = " * 2000 + "1" + "}" * 2000,
        "x = " + "[" * 40000,
        "a" + ".a" * 3000 + " = 1",
        "[" + ".".join(["t"] * 2000) + "]\nv = 1",
        "x = [[[[[[[1]]]]]]]",
    ],
    ids=["deep-arrays", "deep-inline-tables", "unclosed-arrays", "dotted-keys", "deep-header", "seven-levels"],
)
def test_deep_nesting_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(InputError) as caught:
        load_policy(path)

    assert "nested" in str(caught.value)
    _assert_clean(str(caught.value), str(path))


def test_brackets_inside_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    source = (VECTORS / "valid" / "minimal_bank.toml").read_text(encoding="utf-8")
    source = source.replace('name = "Bank A"', 'name = "Bank [[[[[[[[ A"')
    source += "# [[[[[[[[[[[[[[[[[[[[\n"
    path = tmp_path / "brackets.toml"
    path.write_text(source, encoding="utf-8")

    assert load_policy(path).identity.name == "Bank [[[[[[[[ A"


def test_binary_garbage_is_a_clean_input_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.toml"
    path.write_bytes(bytes(range(256)) * 4)

    with pytest.raises(InputError) as caught:
        load_policy(path)

    _assert_clean(str(caught.value), str(path))


def test_non_utf8_is_a_clean_input_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('schema_version = 1\n[identity]\nname = "Bänk"\n'.encode("latin-1"))

    with pytest.raises(InputError) as caught:
        load_policy(path)

    assert "not valid UTF-8" in str(caught.value)
    _assert_clean(str(caught.value), str(path))


def test_nul_bytes_are_a_clean_input_error(tmp_path: Path) -> None:
    path = tmp_path / "nul.toml"
    path.write_bytes(b"schema_version = 1\x00\n")

    with pytest.raises(InputError):
        load_policy(path)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(InputError) as caught:
        load_policy(path)

    assert str(path) in str(caught.value)


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_policy(tmp_path)

    assert "not a regular file" in str(caught.value)


def test_device_file_is_refused_without_reading_it() -> None:
    with pytest.raises(InputError) as caught:
        load_policy("/dev/zero")

    assert "not a regular file" in str(caught.value)


def test_empty_file_reports_every_missing_section(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_bytes(b"")

    with pytest.raises(PolicyFileError) as caught:
        load_policy(path)

    fields = {problem.field for problem in caught.value.problems}
    assert fields == {"schema_version", "identity", "data_use", "protection", "outputs", "audit"}


def _toml(document: dict[str, Any]) -> bytes:
    """Serialise a policy-shaped document (sections of scalars and lists) to TOML."""
    lines: list[str] = []
    for key, value in document.items():
        if not isinstance(value, dict):
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in document.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in value.items())
    return ("\n".join(lines) + "\n").encode("utf-8")


def _toml_value(value: Any) -> str:
    from datetime import datetime

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(type(value).__name__)
