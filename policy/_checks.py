"""Field type checks shared by the policy package's frozen dataclasses.

:class:`policy.decide.RoundInstructions` and :class:`policy.plan.RunRequest`
check their fields the same way; each raises its own error type (a protocol
error for instructions from the server, a configuration error for a run
request), so this module only collects the problems and leaves raising to them.
"""

from __future__ import annotations

from collections.abc import Iterable


def field_type_problems(
    obj: object,
    *,
    strings: Iterable[str],
    integers: Iterable[str],
    string_tuples: Iterable[str],
) -> list[str]:
    """Return one message per field of ``obj`` whose value has the wrong type.

    A field named in ``string_tuples`` that holds a list of strings is frozen
    into a tuple on ``obj`` (through ``object.__setattr__``, as ``obj`` is a
    frozen dataclass), so that the caller's list is never kept.

    Parameters
    ----------
    obj : object
        The frozen dataclass instance being checked (from its ``__post_init__``).
    strings : iterable of str
        Names of fields that must be ``str``.
    integers : iterable of str
        Names of fields that must be ``int`` (``bool`` is refused).
    string_tuples : iterable of str
        Names of fields that must be a tuple (or list) of ``str``.

    Returns
    -------
    list of str
        The problems found, in field order; empty if every field is well typed.
    """
    problems: list[str] = []
    for name in strings:
        if not isinstance(getattr(obj, name), str):
            problems.append(f"{name} must be a string")
    for name in integers:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{name} must be an integer")
    for name in string_tuples:
        value = getattr(obj, name)
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            problems.append(f"{name} must be a tuple of strings")
        elif not all(isinstance(item, str) for item in value):
            problems.append(f"{name} must contain only strings")
        else:
            # Freeze a list handed in by the caller; never keep their object.
            object.__setattr__(obj, name, tuple(value))
    return problems
