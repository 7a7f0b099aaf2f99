"""The product's one exception hierarchy, and the one table of exit codes.

Every error that can reach the command line declares the exit code the CLI
uses for it, so that scripts (and compliance tooling) can tell a bad input
from a policy refusal from a broken signature without parsing text. Every
``fedfraud`` entry point turns an error into its code the same way
(:func:`fedfraud.exits.run_app`). The codes:

====  ==========================================================================
0     success (``fedfraud audit verify``: the log is VALID)
1     an unexpected failure (:class:`FedFraudError` itself)
2     usage: the command line is wrong, or its inputs do not belong together
      (click's usage errors, :class:`UsageError`)
3     an input file cannot be read or parsed (:class:`InputError`)
4     a policy forbids the run, or policies conflict (:class:`PolicyViolation`)
5     a protocol step was out of order, malformed or unsafe (:class:`ProtocolError`)
6     a cryptographic check failed (:class:`CryptoError`)
7     an audit log could not be written or verified (:class:`AuditError`)
8     a federated run did not finish every round (:class:`RunFailed`)
9     a setting, run-config value or policy file is invalid (:class:`ConfigError`)
10    audit verdict TAMPERED (``audit.errors.LogTamperedError``)
11    audit verdict INCOMPLETE (``audit.errors.LogIncompleteError``)
12    audit verdict POLICY_VIOLATED (``audit.errors.PolicyViolatedError``)
13    audit verdict EQUIVOCATION (``audit.errors.EquivocationError``)
130   interrupted (Ctrl-C or SIGTERM)
====  ==========================================================================
"""

from __future__ import annotations

from typing import ClassVar


class FedFraudError(Exception):
    """Base class of every error the product raises on purpose.

    Subclasses set ``exit_code``; ``__init_subclass__`` refuses a code outside
    1..125 and a code that another family already declared (a subclass may
    repeat or refine its own family's code only), so each family stays distinct.
    """

    exit_code: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("exit_code")
        if code is None:
            return
        if not isinstance(code, int) or not 1 <= code <= 125:
            raise TypeError(f"{cls.__name__}.exit_code must be an int in 1..125")
        owner = _CODE_OWNERS.get(code)
        same = owner is not None and (owner.__module__, owner.__qualname__) == (cls.__module__, cls.__qualname__)
        if owner is not None and not same and not issubclass(cls, owner):
            raise TypeError(f"{cls.__name__}.exit_code {code} is already {owner.__name__}'s")
        if owner is None or same:
            _CODE_OWNERS[code] = cls


#: The first class that declared each exit code (its family's root).
_CODE_OWNERS: dict[int, type[FedFraudError]] = {1: FedFraudError}


class UsageError(FedFraudError):
    """The inputs given do not belong together (e.g. one run's log with another's keys).

    It shares exit code 2 with the command line's own usage errors: both mean
    the caller must change what they asked for, not that anything failed.
    """

    exit_code = 2


class ConfigError(FedFraudError):
    """A run configuration, node configuration, settings value or policy file is invalid."""

    exit_code = 9


class InputError(FedFraudError):
    """An input file (data, schema, policy, key, log) cannot be read or parsed."""

    exit_code = 3


class PolicyViolation(FedFraudError):
    """A run or round breaks an institution's policy.

    ``violations`` holds every broken rule, so the caller can show them all at
    once instead of one per attempt.
    """

    exit_code = 4

    def __init__(self, message: str, violations: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.violations = violations


class ProtocolError(FedFraudError):
    """A federated protocol step was out of order, malformed or unsafe."""

    exit_code = 5


class CryptoError(FedFraudError):
    """A cryptographic operation failed; messages stay opaque on purpose."""

    exit_code = 6


class AuditError(FedFraudError):
    """An audit log could not be written or verified."""

    exit_code = 7


class RunFailed(FedFraudError):
    """A federated run stopped before every round finished, or released no metrics."""

    exit_code = 8
