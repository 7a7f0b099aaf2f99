"""The product's one exception hierarchy.

Every error that can reach the command line declares the exit code the CLI
uses for it, so that scripts (and compliance tooling) can tell a bad input
from a policy refusal from a broken signature without parsing text.
"""

from __future__ import annotations

from typing import ClassVar


class FedFraudError(Exception):
    """Base class of every error the product raises on purpose.

    Subclasses set ``exit_code``; ``__init_subclass__`` refuses a subclass that
    reuses the base class's code by accident, so each family stays distinct.
    """

    exit_code: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("exit_code")
        if code is not None and (not isinstance(code, int) or not 1 <= code <= 125):
            raise TypeError(f"{cls.__name__}.exit_code must be an int in 1..125")


class ConfigError(FedFraudError):
    """A run configuration, node configuration or settings value is invalid."""

    exit_code = 2


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
