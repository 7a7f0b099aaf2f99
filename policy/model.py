"""The policy schema: strict, frozen pydantic v2 models and the policy hash.

One institution writes one policy file. Its contents are validated once, here,
at the boundary: unknown fields, wrong types, naive datetimes and rules that
contradict each other are all rejected, and every problem is reported at once.

Set-like lists (purposes, features, partners, recipients, metrics) are stored
sorted, so two files that differ only in order, layout or comments produce the
same model and therefore the same :attr:`Policy.policy_hash`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Self, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from policy.errors import PolicyRefusal

__all__ = [
    "COUNT_METRICS",
    "FEDERATION",
    "HASH_DOMAIN_TAG",
    "MAX_VALIDITY",
    "SCHEMA_VERSION",
    "AggregationMode",
    "AggregationRequirement",
    "AuditTerms",
    "DataUse",
    "Identity",
    "Metric",
    "Outputs",
    "Policy",
    "Protection",
    "Purpose",
]

#: The only policy schema version this build understands.
SCHEMA_VERSION: Final = 1

#: Domain-separation prefix of the bytes hashed into :attr:`Policy.policy_hash`,
#: so a policy hash can never be confused with the hash of another artifact
#: that happens to share its canonical JSON.
HASH_DOMAIN_TAG: Final = b"fedfraud/policy/v1\x00"

#: The literal recipient meaning "every institution in the federation".
FEDERATION: Final = "federation"

#: The longest validity window a policy may declare: policies must be
#: re-approved (and re-signed) at least this often.
MAX_VALIDITY: Final = timedelta(days=5 * 366)


class Purpose(StrEnum):
    """Purposes of processing, named after W3C DPV terms (``https://w3id.org/dpv#``).

    Only a fixed subset relevant to fraud detection is accepted; an unknown
    purpose is an error, never silently ignored.
    """

    FRAUD_PREVENTION_AND_DETECTION = "FraudPreventionAndDetection"
    MAINTAIN_FRAUD_DATABASE = "MaintainFraudDatabase"
    COUNTER_MONEY_LAUNDERING = "CounterMoneyLaundering"
    IDENTITY_VERIFICATION = "IdentityVerification"
    IDENTITY_AUTHENTICATION = "IdentityAuthentication"
    ENFORCE_SECURITY = "EnforceSecurity"
    LEGAL_COMPLIANCE = "LegalCompliance"
    ORGANISATION_RISK_MANAGEMENT = "OrganisationRiskManagement"
    SERVICE_PROVISION = "ServiceProvision"
    IMPROVE_EXISTING_PRODUCTS_AND_SERVICES = "ImproveExistingProductsAndServices"
    RESEARCH_AND_DEVELOPMENT = "ResearchAndDevelopment"
    COMMERCIAL_RESEARCH = "CommercialResearch"
    NON_COMMERCIAL_RESEARCH = "NonCommercialResearch"
    ACADEMIC_RESEARCH = "AcademicResearch"


class AggregationMode(StrEnum):
    """How client updates are protected while they are summed in one run."""

    SECAGG_PLUS = "secagg+"
    CKKS = "ckks"


#: The aggregation modes this version of fedfraud can actually perform. A plan
#: refuses a run in any other mode, so no policy check can accept a run that
#: no code would carry out.
AVAILABLE_AGGREGATION_MODES: frozenset[AggregationMode] = frozenset(
    {AggregationMode.SECAGG_PLUS, AggregationMode.CKKS}
)


class AggregationRequirement(StrEnum):
    """Which aggregation modes a policy accepts (``any`` accepts both)."""

    SECAGG_PLUS = "secagg+"
    CKKS = "ckks"
    ANY = "any"

    def allowed_modes(self) -> frozenset[AggregationMode]:
        """Return the concrete modes this requirement accepts.

        Returns
        -------
        frozenset of AggregationMode
            Both modes for ``any``, otherwise exactly the named one.
        """
        if self is AggregationRequirement.ANY:
            return frozenset(AggregationMode)
        return frozenset({AggregationMode(self.value)})


class Metric(StrEnum):
    """Evaluation metrics a client may report to the server."""

    LOSS = "loss"
    PRECISION = "precision"
    RECALL = "recall"
    F1 = "f1"
    AUC_ROC = "auc_roc"
    AUC_PR = "auc_pr"
    FALSE_NEGATIVES = "false_negatives"
    FALSE_POSITIVES = "false_positives"
    TRUE_POSITIVES = "true_positives"
    TRUE_NEGATIVES = "true_negatives"
    NUM_EXAMPLES = "num_examples"


#: Metrics that are counts of records, subject to small-cell suppression.
COUNT_METRICS: Final = frozenset(
    {
        Metric.FALSE_NEGATIVES,
        Metric.FALSE_POSITIVES,
        Metric.TRUE_POSITIVES,
        Metric.TRUE_NEGATIVES,
        Metric.NUM_EXAMPLES,
    }
)

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_FEATURE = re.compile(r"[a-z][a-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _check_institution_id(value: str) -> str:
    if not 2 <= len(value) <= 48 or not _SLUG.fullmatch(value):
        raise PydanticCustomError(
            "institution_id",
            "expected an institution id slug such as 'bank-a' (2-48 lowercase letters, "
            "digits and single inner hyphens), found {found}",
            {"found": repr(value[:60])},
        )
    if value == FEDERATION:
        raise PydanticCustomError(
            "institution_id",
            "'federation' is reserved for outputs.model_recipients and cannot name an institution",
        )
    return value


def _check_recipient(value: str) -> str:
    if value == FEDERATION:
        return value
    return _check_institution_id(value)


def _check_feature(value: str) -> str:
    if not 1 <= len(value) <= 64 or not _FEATURE.fullmatch(value):
        raise PydanticCustomError(
            "feature_name",
            "expected a column name in lowercase snake_case (at most 64 characters), "
            "found {found}",
            {"found": repr(value[:80])},
        )
    return value


def _check_display_name(value: str) -> str:
    if not value.strip() or value != value.strip():
        raise PydanticCustomError(
            "display_name", "expected a non-empty name without leading or trailing spaces"
        )
    if _CONTROL.search(value):
        raise PydanticCustomError("display_name", "control characters are not allowed in a name")
    return value


def _check_public_key(value: str) -> str:
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise PydanticCustomError(
            "public_key",
            "expected the standard base64 encoding of a 32-byte Ed25519 public key; "
            "the value is not valid base64",
        ) from None
    if len(raw) != 32:
        raise PydanticCustomError(
            "public_key",
            "expected the base64 of a 32-byte Ed25519 public key (RFC 8032, section 5.1.5), "
            "found {found} bytes",
            {"found": len(raw)},
        )
    if raw == bytes(32):
        raise PydanticCustomError(
            "public_key", "an all-zero public key is a placeholder, not a key"
        )
    # Re-encode so that the stored (and hashed) form is canonical.
    return base64.b64encode(raw).decode("ascii")


def _check_aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError(
            "naive_datetime",
            "expected an offset date-time such as 2026-01-01T00:00:00Z; "
            "found a local date-time without a timezone offset",
        )
    return value.astimezone(UTC)


InstitutionId = Annotated[str, AfterValidator(_check_institution_id)]
Recipient = Annotated[str, AfterValidator(_check_recipient)]
FeatureName = Annotated[str, AfterValidator(_check_feature)]
AwareDatetime = Annotated[datetime, AfterValidator(_check_aware)]

# TOML arrays arrive as Python lists and TOML strings as str. Containers are
# therefore validated in lax mode (list -> tuple) while their items, and every
# scalar, stay strict; enums are lax so that their string values are accepted
# (strict enums would demand enum instances).
_S = TypeVar("_S", bound=str)

LaxPurpose = Annotated[Purpose, Strict(False)]
LaxMetric = Annotated[Metric, Strict(False)]
LaxAggregationRequirement = Annotated[AggregationRequirement, Strict(False)]
LaxAggregationMode = Annotated[AggregationMode, Strict(False)]


def _sorted_unique(values: tuple[_S, ...]) -> tuple[_S, ...]:
    """Return ``values`` sorted, refusing duplicates (a sign of a copy-paste slip)."""
    seen: set[str] = set()
    duplicates: list[str] = []
    for value in values:
        if value in seen and value not in duplicates:
            duplicates.append(str(value))
        seen.add(value)
    if duplicates:
        raise PydanticCustomError(
            "duplicate_entry",
            "each entry may appear only once; repeated: {repeated}",
            {"repeated": ", ".join(repr(d) for d in duplicates)},
        )
    return tuple(sorted(values, key=str))


def _raise_rule_errors(title: str, errors: list[tuple[tuple[str | int, ...], str, Any]]) -> None:
    """Raise one ``ValidationError`` carrying every cross-field rule that failed."""
    if not errors:
        return
    details = [
        InitErrorDetails(
            type=PydanticCustomError("policy_rule", message),
            loc=loc,
            input=value,
        )
        for loc, message, value in errors
    ]
    raise ValidationError.from_exception_data(title, details)


_MODEL_CONFIG = ConfigDict(
    extra="forbid",
    strict=True,
    frozen=True,
    revalidate_instances="always",
)


class Identity(BaseModel):
    """Who the policy belongs to, which key signs for it, and when it applies.

    Attributes
    ----------
    id : str
        The institution's slug, e.g. ``bank-a``.
    name : str
        A human-readable name.
    public_key : str
        Standard base64 of the institution's 32-byte Ed25519 public key.
    version : int
        The policy's own version, increased on every approved change.
    valid_from, valid_until : datetime
        The validity window, timezone-aware and normalised to UTC;
        ``valid_from`` is inclusive and ``valid_until`` exclusive.
    """

    model_config = _MODEL_CONFIG

    id: InstitutionId
    name: Annotated[str, Field(min_length=1, max_length=120), AfterValidator(_check_display_name)]
    public_key: Annotated[str, Field(max_length=64), AfterValidator(_check_public_key)]
    version: Annotated[int, Field(ge=1, le=2**31 - 1)]
    valid_from: AwareDatetime
    valid_until: AwareDatetime

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        # 1. The window must not be empty or inverted.
        if self.valid_until <= self.valid_from:
            errors.append(
                (
                    ("valid_until",),
                    f"must be after valid_from ({_rfc3339(self.valid_from)}), "
                    f"found {_rfc3339(self.valid_until)}",
                    self.valid_until,
                )
            )
        # 2. Policies are re-approved periodically; an open-ended one is a mistake.
        elif self.valid_until - self.valid_from > MAX_VALIDITY:
            errors.append(
                (
                    ("valid_until",),
                    f"the validity window may be at most {MAX_VALIDITY.days} days, "
                    f"found {(self.valid_until - self.valid_from).days} days",
                    self.valid_until,
                )
            )
        _raise_rule_errors("Identity", errors)
        return self


class DataUse(BaseModel):
    """What the institution's data may be used for, with which columns and with whom.

    Attributes
    ----------
    purposes : tuple of Purpose
        The DPV purposes a run may declare.
    allowed_features : tuple of str
        Allowlist of column names a model may be trained on.
    forbidden_features : tuple of str
        Columns that must never be used (direct identifiers and other PII).
    accepted_partners : tuple of str
        Ids of the other institutions this one agrees to train with.
    min_partners : int
        The fewest other institutions that must be in a round.
    """

    model_config = _MODEL_CONFIG

    purposes: Annotated[tuple[LaxPurpose, ...], Strict(False), Field(min_length=1, max_length=32)]
    allowed_features: Annotated[
        tuple[FeatureName, ...], Strict(False), Field(min_length=1, max_length=1024)
    ]
    forbidden_features: Annotated[tuple[FeatureName, ...], Strict(False), Field(max_length=1024)]
    accepted_partners: Annotated[
        tuple[InstitutionId, ...], Strict(False), Field(min_length=1, max_length=1000)
    ]
    min_partners: Annotated[int, Field(ge=1, le=1000)]

    @field_validator(
        "purposes", "allowed_features", "forbidden_features", "accepted_partners", mode="after"
    )
    @classmethod
    def _normalise(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(values)

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        # 1. A column cannot be both allowed and forbidden.
        both = sorted(set(self.allowed_features) & set(self.forbidden_features))
        if both:
            errors.append(
                (
                    ("allowed_features",),
                    f"also listed in forbidden_features: {', '.join(both)}",
                    both,
                )
            )
        # 2. min_partners must be reachable with the partners accepted.
        if self.min_partners > len(self.accepted_partners):
            errors.append(
                (
                    ("min_partners",),
                    f"is {self.min_partners} but accepted_partners lists only "
                    f"{len(self.accepted_partners)}",
                    self.min_partners,
                )
            )
        _raise_rule_errors("DataUse", errors)
        return self


class Protection(BaseModel):
    """How updates must be protected and how much training is allowed.

    Attributes
    ----------
    required_aggregation : AggregationRequirement
        ``secagg+``, ``ckks`` or ``any`` (either).
    min_cohort_size : int
        How many institutions' updates must be summed before anyone sees a sum.
    min_secagg_threshold : int
        The lowest SecAgg+ reconstruction threshold accepted.
    max_rounds : int
        The most rounds one run may have.
    max_local_epochs : int
        The most local epochs per round.
    """

    model_config = _MODEL_CONFIG

    required_aggregation: LaxAggregationRequirement
    # A sum over fewer than two contributions is the contribution itself.
    min_cohort_size: Annotated[int, Field(ge=2, le=1000)]
    # With threshold 1 a single share rebuilds a secret (Shamir, 1979), so the
    # masking would protect nothing.
    min_secagg_threshold: Annotated[int, Field(ge=2, le=1000)]
    max_rounds: Annotated[int, Field(ge=1, le=10_000)]
    max_local_epochs: Annotated[int, Field(ge=1, le=1000)]

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        # 1. A cohort smaller than the threshold could never reconstruct its sum,
        #    and a threshold above the cohort means the cohort bound is the weaker one.
        if self.min_cohort_size < self.min_secagg_threshold:
            errors.append(
                (
                    ("min_cohort_size",),
                    f"is {self.min_cohort_size} but must be at least min_secagg_threshold "
                    f"({self.min_secagg_threshold})",
                    self.min_cohort_size,
                )
            )
        _raise_rule_errors("Protection", errors)
        return self


class Outputs(BaseModel):
    """What may leave the federation.

    Attributes
    ----------
    model_recipients : tuple of str
        Institution ids, or ``federation`` for every member, that may receive
        the final model.
    allowed_metrics : tuple of Metric
        Metrics a client may report.
    min_cell_count : int
        Count metrics below this value are suppressed.
    synthetic_release_allowed : bool
        Whether synthetic data derived from the model may be released.
    """

    model_config = _MODEL_CONFIG

    model_recipients: Annotated[
        tuple[Recipient, ...], Strict(False), Field(min_length=1, max_length=1000)
    ]
    allowed_metrics: Annotated[tuple[LaxMetric, ...], Strict(False), Field(max_length=32)]
    # Cells of 1 or 2 are the classic disclosure risk in published tables; a
    # threshold below 3 would suppress nothing of value.
    min_cell_count: Annotated[int, Field(ge=3, le=1_000_000)]
    synthetic_release_allowed: bool

    @field_validator("model_recipients", "allowed_metrics", mode="after")
    @classmethod
    def _normalise(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(values)


class AuditTerms(BaseModel):
    """What the institution requires of the audit trail.

    Attributes
    ----------
    require_countersigned_receipts : bool
        Whether every round receipt must be countersigned by this institution.
    retention_days : int
        How long audit records are kept (at least 180 days, at most ten years).
    """

    model_config = _MODEL_CONFIG

    require_countersigned_receipts: bool
    retention_days: Annotated[int, Field(ge=180, le=3660)]


class HistogramRelease(BaseModel):
    """Whether summed gradient histograms may leave (``model = "gbdt"``).

    Boosted trees are grown from per-node, per-feature, per-bin sums of row
    counts, gradients and hessians, summed over the cohort by the secure sum;
    the server sees those totals and the trees it builds from them. A policy
    without this section refuses every such release.

    Attributes
    ----------
    allowed : bool
        Whether this institution contributes histograms at all.
    min_cohort_size : int
        Fewest institutions in any histogram sum (at least 2).
    min_child_rows : int
        Small-cell rule: no split may leave a child with fewer rows across
        the federation; the institution refuses to sum for a node that the
        server says holds fewer.
    """

    model_config = _MODEL_CONFIG

    allowed: bool
    min_cohort_size: Annotated[int, Field(ge=2, le=1000)]
    min_child_rows: Annotated[int, Field(ge=1, le=10_000_000)]


class Policy(BaseModel):
    """One institution's validated, immutable policy.

    Build one with :func:`policy.load.load_policy`; constructing it directly
    from a mapping (``Policy.model_validate``) applies exactly the same checks.

    Attributes
    ----------
    schema_version : int
        Always :data:`SCHEMA_VERSION`.
    identity, data_use, protection, outputs, audit
        The sections described by their classes.
    """

    model_config = _MODEL_CONFIG

    schema_version: int
    identity: Identity
    data_use: DataUse
    protection: Protection
    outputs: Outputs
    audit: AuditTerms
    #: Optional: absent means no summed histogram may leave (and the policy's
    #: hash is what it was before the section existed).
    histograms: HistogramRelease | None = None

    @field_validator("schema_version", mode="after")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value != SCHEMA_VERSION:
            raise PydanticCustomError(
                "schema_version",
                "unknown schema_version {found}; this build understands only {known}",
                {"found": value, "known": SCHEMA_VERSION},
            )
        return value

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        errors: list[tuple[tuple[str | int, ...], str, Any]] = []
        me = self.identity.id
        partners = set(self.data_use.accepted_partners)
        # 1. An institution does not partner with itself.
        if me in partners:
            errors.append(
                (
                    ("data_use", "accepted_partners"),
                    f"lists the institution itself ({me!r}); list only the other institutions",
                    me,
                )
            )
        # 2. The minimum cohort must be reachable: this institution plus its partners.
        reachable = 1 + len(partners - {me})
        if self.protection.min_cohort_size > reachable:
            errors.append(
                (
                    ("protection", "min_cohort_size"),
                    f"is {self.protection.min_cohort_size} but this institution and its "
                    f"accepted partners number only {reachable}, so no run could satisfy it",
                    self.protection.min_cohort_size,
                )
            )
        # 3. The final model may go only to the federation, this institution or a partner.
        known = partners | {me, FEDERATION}
        strangers = [r for r in self.outputs.model_recipients if r not in known]
        if strangers:
            errors.append(
                (
                    ("outputs", "model_recipients"),
                    f"names {', '.join(strangers)}, which is neither 'federation', this "
                    "institution nor an accepted partner",
                    strangers,
                )
            )
        _raise_rule_errors("Policy", errors)
        return self

    # -- identity -------------------------------------------------------------

    @property
    def institution_id(self) -> str:
        """The owning institution's id (``identity.id``)."""
        return self.identity.id

    @property
    def allowed_aggregation_modes(self) -> frozenset[AggregationMode]:
        """The concrete aggregation modes this policy accepts."""
        return self.protection.required_aggregation.allowed_modes()

    # -- hashing --------------------------------------------------------------

    def canonical_document(self) -> dict[str, Any]:
        """Return the policy as plain JSON types, in canonical form.

        Returns
        -------
        dict
            Enums as their values, tuples as lists (already sorted where the
            field is a set), datetimes as RFC 3339 UTC strings.
        """
        dumped = self.model_dump(mode="python")
        if dumped.get("histograms") is None:
            dumped.pop("histograms", None)
        document: dict[str, Any] = _to_json_types(dumped)
        return document

    def canonical_json(self) -> bytes:
        """Return the canonical JSON encoding the policy hash is computed over.

        Returns
        -------
        bytes
            UTF-8 JSON with sorted keys and no insignificant whitespace.
        """
        return json.dumps(
            self.canonical_document(),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        ).encode("utf-8")

    @property
    def policy_hash(self) -> str:
        """Hex SHA-256 over :data:`HASH_DOMAIN_TAG` followed by :meth:`canonical_json`.

        Stable across reformatting, reordering and comments in the source file;
        any change of value changes it.
        """
        return hashlib.sha256(HASH_DOMAIN_TAG + self.canonical_json()).hexdigest()

    # -- time -----------------------------------------------------------------

    def validity_violations(self, now: datetime) -> tuple[str, ...]:
        """List why the policy does not apply at ``now`` (empty if it does).

        Parameters
        ----------
        now : datetime
            A timezone-aware instant.

        Returns
        -------
        tuple of str
            Violations named by rule; callers that gate anything must use
            :meth:`ensure_current` or :func:`policy.decide.check_round`, which raise.

        Raises
        ------
        TypeError
            If ``now`` is naive (comparing it would silently assume a zone).
        """
        if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
            raise TypeError("now must be a timezone-aware datetime")
        found: list[str] = []
        if now < self.identity.valid_from:
            found.append(
                f"identity.valid_from: the policy applies only from "
                f"{_rfc3339(self.identity.valid_from)}, it is now {_rfc3339(now)}"
            )
        if now >= self.identity.valid_until:
            found.append(
                f"identity.valid_until: the policy expired at "
                f"{_rfc3339(self.identity.valid_until)}, it is now {_rfc3339(now)}"
            )
        return tuple(found)

    def ensure_current(self, now: datetime) -> None:
        """Raise unless the policy applies at ``now``.

        Parameters
        ----------
        now : datetime
            A timezone-aware instant.

        Raises
        ------
        PolicyRefusal
            If ``now`` is before ``identity.valid_from`` or at/after
            ``identity.valid_until``.
        TypeError
            If ``now`` is naive.
        """
        violations = self.validity_violations(now)
        if violations:
            raise PolicyRefusal(
                f"{self.institution_id}: policy version {self.identity.version} is not in force",
                violations,
                policy_hash=self.policy_hash,
                institution=self.institution_id,
            )


def _rfc3339(moment: datetime) -> str:
    """Format an aware datetime as an RFC 3339 UTC string ending in ``Z``."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _to_json_types(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_json_types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json_types(v) for v in value]
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, (bool, int, str)):
        return value
    raise TypeError(f"no canonical JSON form for {type(value).__name__}")
