"""Errors raised by the policy package.

Both classes extend the product's one hierarchy in :mod:`core.errors`, so
the CLI maps them to the exit codes declared there: an invalid policy file is a
:class:`~core.errors.ConfigError` (exit 9) and a refusal is a
:class:`~core.errors.PolicyViolation` (exit 4).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import ConfigError, PolicyViolation


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One reason a policy file is invalid.

    Parameters
    ----------
    file : str
        The file the problem was found in (as the caller named it).
    field : str
        Dotted path of the field, e.g. ``data_use.allowed_features[3]``;
        ``<root>`` when the problem concerns the file as a whole.
    reason : str
        One line saying what was expected and what was found.
    """

    file: str
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.reason}"


class PolicyFileError(ConfigError):
    """A policy file parsed as TOML but does not describe a valid policy.

    Parameters
    ----------
    file : str
        The file that failed validation.
    problems : tuple of FieldProblem
        Every problem found, in the order the validator reported them.

    Notes
    -----
    ``str(error)`` is a summary line followed by one line per problem, each
    naming the file, the dotted field path and the reason.
    """

    def __init__(self, file: str, problems: tuple[FieldProblem, ...]) -> None:
        self.file = file
        self.problems = problems
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{file}: invalid policy ({count} {noun})"]
        lines.extend(str(problem) for problem in problems)
        super().__init__("\n".join(lines))


class PolicyRefusal(PolicyViolation):
    """An institution's policy refuses a round, a run or a release.

    Parameters
    ----------
    message : str
        A one-line summary.
    violations : tuple of str
        Every broken rule, each starting with the dotted field path of the
        rule (``protection.min_cohort_size: ...``).
    policy_hash : str
        Hex SHA-256 :attr:`~policy.model.Policy.policy_hash` of the policy
        that refused, so the audit log can record exactly which rules applied.
    institution : str
        The id of the institution whose policy refused.
    """

    def __init__(
        self,
        message: str,
        violations: tuple[str, ...],
        *,
        policy_hash: str,
        institution: str,
    ) -> None:
        super().__init__(message, violations)
        self.policy_hash = policy_hash
        self.institution = institution

    def __str__(self) -> str:
        lines = [str(self.args[0])]
        lines.extend(f"  - {violation}" for violation in self.violations)
        return "\n".join(lines)


class PlanConflict(PolicyViolation):
    """A run (or a round's surviving cohort) conflicts with the combined policies.

    Parameters
    ----------
    message : str
        A one-line summary.
    violations : tuple of str
        Every conflict, each naming the institution(s) and the rule, e.g.
        ``bank-b: protection.max_rounds is 5 but the run asks for 10 rounds``.
    policy_hashes : tuple of (str, str)
        ``(institution id, policy hash)`` of every policy in the plan, so the
        audit log can record exactly which policies refused.
    """

    def __init__(
        self,
        message: str,
        violations: tuple[str, ...],
        *,
        policy_hashes: tuple[tuple[str, str], ...],
    ) -> None:
        super().__init__(message, violations)
        self.policy_hashes = policy_hashes

    def __str__(self) -> str:
        lines = [str(self.args[0])]
        lines.extend(f"  - {violation}" for violation in self.violations)
        return "\n".join(lines)
