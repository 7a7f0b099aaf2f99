"""Seeded synthetic payment transactions for a federation of institutions.

Each institution gets its own population of customers and terminals and a
simulated history of ``HISTORY_DAYS`` days (preceded by an unlabelled warm-up
of ``WARMUP_DAYS`` days so that the 30-day aggregates of the first rows are
computed from a full history). Customer and terminal aggregates are computed
from that simulated history, the way a bank's feature store would.

Fraud comes in four typologies, each with its own signature:

``compromised_terminal``
    A few physical terminals are compromised for two to five weeks; a ring
    cashes out cloned cards there, card present, mostly in the evening and at
    night, above the victims' usual amounts. The signature is the terminal's recent
    fraud rate, which is only known with a ``FRAUD_REPORT_DELAY_DAYS`` delay,
    so the first days of a compromise look clean.
``card_not_present``
    Stolen card credentials used online at high-risk merchants, often from a
    foreign country and at night in the cardholder's time zone.
``account_takeover``
    A fraudster logs in from a new device and empties the account in a burst
    of transfers within a few hours, each far above the customer's mean.
``high_amount_outlier``
    A single, unusually large amount with otherwise ordinary context.

Legitimate traffic has the confounders real traffic has (travel abroad, new
phones, occasional big purchases, night owls), so no single flag is a fraud
label. Each institution has its own typology mix, fraud rate and channel mix;
a model trained on one institution therefore misses typologies it never saw.
:class:`Heterogeneity` ``high`` makes the institutions far more different
(fraud rates from 0.5 % to 10 %, disjoint typologies, shifted features), the
setting in which plain federated averaging struggles (issue 13).

Randomness comes only from ``numpy.random.default_rng`` seeded by the caller
(this is test and benchmark data, not a security path); the same seed gives
the same frame and the same files, byte for byte. Writing the frames to files
(train/test splits and a manifest) is :mod:`fraud.generator_files`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.errors import ConfigError

GENERATOR_VERSION = "fedfraud-synth/1.0"
"""Bumped whenever the same seed would give different data."""

DEFAULT_INSTITUTIONS: tuple[str, ...] = ("bank-a", "bank-b", "insurer-c")
HISTORY_DAYS = 60
WARMUP_DAYS = 30
FRAUD_REPORT_DELAY_DAYS = 7
TERMINAL_WINDOW_DAYS = 28
SECONDS_PER_DAY = 86_400.0
MAX_SECONDS_SINCE_LAST_TX = 30 * SECONDS_PER_DAY
"""Value of ``seconds_since_last_tx`` for a customer's first transaction."""

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Typology(StrEnum):
    """Fraud typologies; ``NONE`` marks legitimate transactions."""

    NONE = "none"
    COMPROMISED_TERMINAL = "compromised_terminal"
    CARD_NOT_PRESENT = "card_not_present"
    ACCOUNT_TAKEOVER = "account_takeover"
    HIGH_AMOUNT_OUTLIER = "high_amount_outlier"


FRAUD_TYPOLOGIES: tuple[Typology, ...] = (
    Typology.COMPROMISED_TERMINAL,
    Typology.CARD_NOT_PRESENT,
    Typology.ACCOUNT_TAKEOVER,
    Typology.HIGH_AMOUNT_OUTLIER,
)


class Channel(StrEnum):
    """Payment channels."""

    CARD_PRESENT = "card_present"
    CARD_NOT_PRESENT = "card_not_present"
    ONLINE_BANKING = "online_banking"


CHANNELS: tuple[Channel, ...] = (
    Channel.CARD_PRESENT,
    Channel.CARD_NOT_PRESENT,
    Channel.ONLINE_BANKING,
)


class Heterogeneity(StrEnum):
    """How different the built-in institutions are from one another.

    ``STANDARD``
        The default profiles: fraud rates between 0.8 % and 2.8 %, two
        dominant typologies per institution with a small tail of the others.
        The data of this setting never changes with a new release of this
        option (same seed, same bytes).
    ``HIGH``
        Institutions as different as real ones are (issue 13): fraud rates
        spanning 0.5 % to 10 %, (mostly) disjoint fraud typologies, and
        shifted feature distributions (ticket sizes from 25 to 250 currency
        units, channel mixes from card-present to online, different rates of
        travel and new devices). The first three institutions are fixed
        archetypes; further ones get a hash-derived profile with one
        dominant typology.
    """

    STANDARD = "standard"
    HIGH = "high"

# Merchant categories: (name, base risk, channel served, share of terminals
# within that channel, legitimate traffic weight). Risk is the prior fraud
# exposure of the category, the way acquirers score merchant category codes.
_CATEGORIES: tuple[tuple[str, float, Channel, float, float], ...] = (
    ("grocery", 0.05, Channel.CARD_PRESENT, 0.30, 0.35),
    ("fuel", 0.15, Channel.CARD_PRESENT, 0.15, 0.15),
    ("restaurant", 0.10, Channel.CARD_PRESENT, 0.25, 0.25),
    ("retail", 0.20, Channel.CARD_PRESENT, 0.20, 0.18),
    ("atm", 0.30, Channel.CARD_PRESENT, 0.07, 0.05),
    ("jewelry", 0.60, Channel.CARD_PRESENT, 0.03, 0.02),
    ("subscriptions", 0.10, Channel.CARD_NOT_PRESENT, 0.20, 0.30),
    ("marketplace", 0.35, Channel.CARD_NOT_PRESENT, 0.30, 0.35),
    ("travel", 0.45, Channel.CARD_NOT_PRESENT, 0.15, 0.15),
    ("electronics", 0.60, Channel.CARD_NOT_PRESENT, 0.15, 0.12),
    ("digital_goods", 0.80, Channel.CARD_NOT_PRESENT, 0.12, 0.06),
    ("gambling", 0.90, Channel.CARD_NOT_PRESENT, 0.08, 0.02),
    ("bill_payment", 0.05, Channel.ONLINE_BANKING, 0.40, 0.55),
    ("p2p_transfer", 0.35, Channel.ONLINE_BANKING, 0.50, 0.43),
    ("crypto_exchange", 0.85, Channel.ONLINE_BANKING, 0.10, 0.02),
)


@dataclass(frozen=True)
class InstitutionProfile:
    """How one institution's customers behave and how it is attacked.

    Parameters
    ----------
    name
        Institution name: lower-case letters, digits, ``-`` and ``_``.
    fraud_rate
        Expected share of fraudulent transactions, in (0, 0.2].
    typology_mix
        Share of each fraud typology among frauds; keys are
        :class:`Typology` values except ``none``; values sum to 1.
    channel_mix
        Share of each :class:`Channel` in legitimate traffic; sums to 1.
    median_amount
        Median legitimate amount of a typical customer, in currency units.
    foreign_rate
        Share of legitimate transactions made abroad (travel, foreign shops).
    new_device_rate
        Share of legitimate remote (card-not-present, online banking)
        transactions made from a device never seen before.
    """

    name: str
    fraud_rate: float
    typology_mix: dict[Typology, float]
    channel_mix: dict[Channel, float]
    median_amount: float = 45.0
    foreign_rate: float = 0.03
    new_device_rate: float = 0.04

    def __post_init__(self) -> None:
        """Validate every field once, and freeze copies of the mixes."""
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigError(
                f"institution name must match {_NAME_RE.pattern}, got {self.name!r}"
            )
        if not 0.0 < float(self.fraud_rate) <= 0.2:
            raise ConfigError(
                f"{self.name}: fraud_rate must be in (0, 0.2], got {self.fraud_rate!r}"
            )
        object.__setattr__(
            self, "typology_mix", _checked_mix(self.name, "typology_mix", self.typology_mix, FRAUD_TYPOLOGIES)
        )
        object.__setattr__(
            self, "channel_mix", _checked_mix(self.name, "channel_mix", self.channel_mix, CHANNELS)
        )
        if not 1.0 <= float(self.median_amount) <= 100_000.0:
            raise ConfigError(
                f"{self.name}: median_amount must be in [1, 1e5], got {self.median_amount!r}"
            )
        for attr in ("foreign_rate", "new_device_rate"):
            value = float(getattr(self, attr))
            if not 0.0 <= value <= 0.5:
                raise ConfigError(f"{self.name}: {attr} must be in [0, 0.5], got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description of the profile (for manifests)."""
        return {
            "name": self.name,
            "fraud_rate": float(self.fraud_rate),
            "typology_mix": {str(k): float(v) for k, v in self.typology_mix.items()},
            "channel_mix": {str(k): float(v) for k, v in self.channel_mix.items()},
            "median_amount": float(self.median_amount),
            "foreign_rate": float(self.foreign_rate),
            "new_device_rate": float(self.new_device_rate),
        }


def _checked_mix(
    name: str, what: str, mix: Mapping[Any, float], keys: Sequence[StrEnum]
) -> dict[Any, float]:
    if not isinstance(mix, Mapping):
        raise ConfigError(f"{name}: {what} must be a mapping, got {type(mix).__name__}")
    allowed = {str(k): k for k in keys}
    unknown = sorted(str(k) for k in mix if str(k) not in allowed)
    if unknown:
        raise ConfigError(f"{name}: {what} has unknown keys {unknown}; expected {sorted(allowed)}")
    out = {k: float(mix.get(str(k), 0.0)) for k in keys}
    values = np.array(list(out.values()))
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ConfigError(f"{name}: {what} values must be finite and >= 0, got {out}")
    if abs(values.sum() - 1.0) > 1e-6:
        raise ConfigError(f"{name}: {what} must sum to 1, got {values.sum():.6f}")
    return out


def _mix(ct: float, cnp: float, ato: float, hao: float) -> dict[Typology, float]:
    return {
        Typology.COMPROMISED_TERMINAL: ct,
        Typology.CARD_NOT_PRESENT: cnp,
        Typology.ACCOUNT_TAKEOVER: ato,
        Typology.HIGH_AMOUNT_OUTLIER: hao,
    }


def _channels(cp: float, cnp: float, ob: float) -> dict[Channel, float]:
    return {Channel.CARD_PRESENT: cp, Channel.CARD_NOT_PRESENT: cnp, Channel.ONLINE_BANKING: ob}


#: The three built-in archetypes of each heterogeneity level, in order:
#: (fraud rate, typology mix, channel mix, median amount, foreign rate, new-device rate).
_ARCHETYPES: dict[Heterogeneity, tuple[tuple[Any, ...], ...]] = {
    Heterogeneity.STANDARD: (
        # A card issuer: skimming and card-not-present fraud dominate.
        (0.020, (0.55, 0.37, 0.04, 0.04), (0.60, 0.30, 0.10), 45.0, 0.03, 0.04),
        # A retail bank with strong card controls: account takeovers and big
        # one-off amounts are what gets through.
        (0.012, (0.04, 0.04, 0.55, 0.37), (0.40, 0.20, 0.40), 60.0, 0.02, 0.05),
        # An insurer: premiums and claim payouts move online, with larger
        # tickets; fraud is card-not-present payment fraud and inflated amounts.
        (0.025, (0.04, 0.50, 0.06, 0.40), (0.10, 0.55, 0.35), 120.0, 0.04, 0.06),
    ),
    Heterogeneity.HIGH: (
        # A card issuer with small tickets, almost all card-present; fraud is
        # rare (0.5 %) and only ever skimming at compromised terminals.
        (0.005, (1.0, 0.0, 0.0, 0.0), (0.80, 0.15, 0.05), 25.0, 0.01, 0.02),
        # An online-first retail bank: transfers dominate, customers change
        # phones often; fraud (5 %) is account takeover only.
        (0.050, (0.0, 0.0, 1.0, 0.0), (0.15, 0.20, 0.65), 80.0, 0.02, 0.10),
        # An insurer with large tickets paid online and customers abroad; fraud
        # (10 %) is stolen card credentials and inflated one-off amounts.
        (0.100, (0.0, 0.6, 0.0, 0.4), (0.05, 0.70, 0.25), 250.0, 0.08, 0.05),
    ),
}


def _archetype(index: int, name: str, level: Heterogeneity = Heterogeneity.STANDARD) -> InstitutionProfile:
    """Built-in archetype ``index`` (0-2) of ``level``: a card issuer, a retail bank, an insurer."""
    rate, mix, channels, amount, foreign, device = _ARCHETYPES[level][index]
    return InstitutionProfile(name, rate, _mix(*mix), _channels(*channels), amount, foreign, device)


def _name_rng(tag: str, name: str) -> np.random.Generator:
    """A generator seeded by the institution's name alone (profiles never depend on order)."""
    digest = hashlib.sha256(f"{GENERATOR_VERSION}/{tag}/{name}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _drawn_channels(rng: np.random.Generator, alpha: list[float], floor: float) -> dict[Channel, float]:
    """A channel mix drawn from a Dirichlet, each channel at least ``floor`` (then renormalised)."""
    channels = np.maximum(rng.dirichlet(alpha), floor)
    channels = channels / channels.sum()
    return dict(zip(CHANNELS, (float(c) for c in channels), strict=True))


def _typology_shares(shares: npt.NDArray[np.float64]) -> dict[Typology, float]:
    return dict(zip(FRAUD_TYPOLOGIES, (float(s) for s in shares), strict=True))


def _derived_profile(name: str) -> InstitutionProfile:
    """A deterministic profile for an institution beyond the built-in three."""
    rng = _name_rng("profile", name)
    # Two dominant typologies (as with the archetypes), plus a small tail.
    order = rng.permutation(len(FRAUD_TYPOLOGIES))
    shares = np.full(len(FRAUD_TYPOLOGIES), 0.04)
    main = rng.uniform(0.4, 0.6)
    shares[order[0]] = main
    shares[order[1]] = 1.0 - main - 0.08
    channel_mix = _drawn_channels(rng, [4.0, 3.0, 2.0], 0.08)
    return InstitutionProfile(
        name=name,
        fraud_rate=round(float(rng.uniform(0.008, 0.028)), 4),
        typology_mix=_typology_shares(shares),
        channel_mix=channel_mix,
        median_amount=round(float(rng.uniform(30.0, 150.0)), 2),
        foreign_rate=round(float(rng.uniform(0.01, 0.05)), 4),
        new_device_rate=round(float(rng.uniform(0.02, 0.07)), 4),
    )


def _heterogeneous_derived(name: str) -> InstitutionProfile:
    """A deterministic :attr:`Heterogeneity.HIGH` profile beyond the three archetypes."""
    rng = _name_rng("profile-high", name)
    # One dominant typology (85 %), a 5 % tail of each other one.
    shares = np.full(len(FRAUD_TYPOLOGIES), 0.05)
    shares[int(rng.integers(0, len(FRAUD_TYPOLOGIES)))] = 0.85
    channel_mix = _drawn_channels(rng, [1.0, 1.0, 1.0], 0.05)
    return InstitutionProfile(
        name=name,
        # Log-uniform over [0.5 %, 10 %]: as many institutions near 1 % as near 5 %.
        fraud_rate=round(float(np.exp(rng.uniform(np.log(0.005), np.log(0.10)))), 4),
        typology_mix=_typology_shares(shares),
        channel_mix=channel_mix,
        median_amount=round(float(np.exp(rng.uniform(np.log(25.0), np.log(250.0)))), 2),
        foreign_rate=round(float(rng.uniform(0.005, 0.10)), 4),
        new_device_rate=round(float(rng.uniform(0.02, 0.10)), 4),
    )


def heterogeneity_level(value: Heterogeneity | str) -> Heterogeneity:
    """Return ``value`` as a :class:`Heterogeneity`; raise :class:`ConfigError` naming the known ones."""
    try:
        return Heterogeneity(value)
    except ValueError:
        known = ", ".join(h.value for h in Heterogeneity)
        raise ConfigError(f"heterogeneity must be one of {known}, got {value!r}") from None


def default_profiles(
    names: Sequence[str] = DEFAULT_INSTITUTIONS,
    heterogeneity: Heterogeneity | str = Heterogeneity.STANDARD,
) -> list[InstitutionProfile]:
    """Return one deterministic profile per institution name.

    The first three names get the built-in archetypes (card-heavy bank,
    retail bank, insurer) in that order; further names get a profile derived
    from a hash of the name, so adding an institution never changes the
    others.

    Parameters
    ----------
    names
        Distinct institution names.
    heterogeneity
        Which family of profiles (:class:`Heterogeneity`); the default,
        ``standard``, gives the profiles every earlier release gave.

    Returns
    -------
    list[InstitutionProfile]
        Profiles in the order of ``names``.

    Raises
    ------
    ConfigError
        If ``names`` is empty, has duplicates or an invalid name, or
        ``heterogeneity`` is unknown.
    """
    level = heterogeneity_level(heterogeneity)
    names = list(names)
    if not names:
        raise ConfigError("at least one institution name is required")
    if len(set(names)) != len(names):
        raise ConfigError(f"institution names must be distinct, got {names}")
    if level is Heterogeneity.HIGH:
        return [
            _archetype(i, n, level) if i < 3 else _heterogeneous_derived(n) for i, n in enumerate(names)
        ]
    return [_archetype(i, n) if i < 3 else _derived_profile(n) for i, n in enumerate(names)]


# ---------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Population:
    cust_rate: npt.NDArray[np.float64]  # relative activity
    cust_median: npt.NDArray[np.float64]  # median amount per customer
    cust_channel_cdf: npt.NDArray[np.float64]  # [n_customers, 3]
    cust_night_owl: npt.NDArray[np.bool_]
    term_category: npt.NDArray[np.int64]
    term_channel: npt.NDArray[np.int64]
    term_risk: npt.NDArray[np.float64]
    term_popularity: npt.NDArray[np.float64]


@dataclass
class _Batch:
    """Columns of simulated transactions before aggregates are computed."""

    customer: list[npt.NDArray[np.int64]] = field(default_factory=list)
    terminal: list[npt.NDArray[np.int64]] = field(default_factory=list)
    time_s: list[npt.NDArray[np.float64]] = field(default_factory=list)
    amount: list[npt.NDArray[np.float64]] = field(default_factory=list)
    new_device: list[npt.NDArray[np.int64]] = field(default_factory=list)
    foreign: list[npt.NDArray[np.int64]] = field(default_factory=list)
    typology: list[npt.NDArray[np.int64]] = field(default_factory=list)
    warmup: list[npt.NDArray[np.bool_]] = field(default_factory=list)

    def add(
        self,
        customer: npt.NDArray[np.int64],
        terminal: npt.NDArray[np.int64],
        time_s: npt.NDArray[np.float64],
        amount: npt.NDArray[np.float64],
        new_device: npt.NDArray[np.int64],
        foreign: npt.NDArray[np.int64],
        typology: Typology,
        warmup: bool = False,
    ) -> None:
        n = len(customer)
        self.customer.append(customer.astype(np.int64))
        self.terminal.append(terminal.astype(np.int64))
        self.time_s.append(time_s.astype(np.float64))
        self.amount.append(np.round(amount.astype(np.float64), 2).astype(np.float64))
        self.new_device.append(new_device.astype(np.int64))
        self.foreign.append(foreign.astype(np.int64))
        self.typology.append(np.full(n, _TYPOLOGY_CODES[typology], dtype=np.int64))
        self.warmup.append(np.full(n, warmup, dtype=np.bool_))


TYPOLOGIES: tuple[Typology, ...] = (Typology.NONE, *FRAUD_TYPOLOGIES)
"""Every typology, ``none`` first, in the order of the typology codes."""
_TYPOLOGY_CODES: Mapping[Typology, int] = MappingProxyType({t: i for i, t in enumerate(TYPOLOGIES)})


def _population(profile: InstitutionProfile, n_rows: int, rng: np.random.Generator) -> _Population:
    # About 30 transactions per customer over the history and 20 per
    # terminal, whatever the size, so aggregates look alike at any scale.
    n_customers = max(20, n_rows // 30)
    n_terminals = max(40, n_rows // 20)
    cust_rate = rng.lognormal(0.0, 0.6, n_customers)
    cust_median = profile.median_amount * rng.lognormal(0.0, 0.5, n_customers)
    mix = np.array([profile.channel_mix[c] for c in CHANNELS])
    # Each customer leans on some channels more than the institution average.
    prefs = rng.dirichlet(np.full(3, 1.0), n_customers) * 0.5 + mix * 0.5
    cdf = np.cumsum(prefs, axis=1)
    cdf[:, -1] = 1.0
    night_owl = rng.random(n_customers) < 0.08

    cat_channel = np.array([CHANNELS.index(c[2]) for c in _CATEGORIES])
    cat_share = np.array([c[3] for c in _CATEGORIES])
    # Split terminals between channels in proportion to the channel mix, with
    # a floor so every channel has terminals to transact at.
    per_channel = np.maximum(np.round(mix * n_terminals), 8).astype(int)
    categories: list[npt.NDArray[np.int64]] = []
    for ch in range(3):
        idx = np.flatnonzero(cat_channel == ch)
        p = cat_share[idx] / cat_share[idx].sum()
        categories.append(rng.choice(idx, size=per_channel[ch], p=p))
    term_category = np.concatenate(categories).astype(np.int64)
    term_channel = cat_channel[term_category]
    base_risk = np.array([c[1] for c in _CATEGORIES])[term_category]
    term_risk = np.clip(base_risk + rng.normal(0.0, 0.05, len(term_category)), 0.0, 1.0)
    term_popularity = rng.lognormal(0.0, 0.8, len(term_category))
    return _Population(
        cust_rate, cust_median, cdf, night_owl, term_category, term_channel, term_risk, term_popularity
    )


def _legit_hours(n: int, night_owl: npt.NDArray[np.bool_], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    # Day-time peak around early afternoon, a flat tail, night owls shifted late.
    peak = np.where(night_owl, 21.0, 13.5)
    hours = rng.normal(peak, 3.5, n)
    flat = rng.random(n) < 0.12
    hours = np.where(flat, rng.uniform(0.0, 24.0, n), hours)
    return np.mod(hours, 24.0)


def _pick_terminals(
    pop: _Population, channel: npt.NDArray[np.int64], weight: npt.NDArray[np.float64], rng: np.random.Generator
) -> npt.NDArray[np.int64]:
    """Pick one terminal per transaction among the channel's, by ``weight``."""
    out = np.empty(len(channel), dtype=np.int64)
    for ch in range(3):
        rows = np.flatnonzero(channel == ch)
        if rows.size == 0:
            continue
        terms = np.flatnonzero(pop.term_channel == ch)
        p = weight[terms] / weight[terms].sum()
        out[rows] = rng.choice(terms, size=rows.size, p=p)
    return out


def _legit(
    profile: InstitutionProfile,
    pop: _Population,
    n: int,
    start_day: int,
    n_days: int,
    warmup: bool,
    batch: _Batch,
    rng: np.random.Generator,
) -> None:
    if n <= 0:
        return
    cust = rng.choice(len(pop.cust_rate), size=n, p=pop.cust_rate / pop.cust_rate.sum())
    # Slightly busier weekends (day 0 of the history is a Monday).
    days = np.arange(start_day, start_day + n_days)
    day_w = np.where(np.mod(days, 7) >= 5, 1.2, 1.0)
    day = rng.choice(days, size=n, p=day_w / day_w.sum())
    hours = _legit_hours(n, pop.cust_night_owl[cust], rng)
    time_s = day * SECONDS_PER_DAY + hours * 3600.0
    u = rng.random(n)
    channel = (u[:, None] > pop.cust_channel_cdf[cust]).sum(axis=1).astype(np.int64)
    # Legitimate customers mostly shop at low-risk merchants.
    legit_weight = pop.term_popularity * (1.05 - pop.term_risk) ** 2
    term = _pick_terminals(pop, channel, legit_weight, rng)
    amount = pop.cust_median[cust] * rng.lognormal(0.0, 0.6, n)
    # Occasional big purchases (a sofa, a holiday) by honest customers.
    big = rng.random(n) < 0.015
    amount = np.where(big, amount * rng.lognormal(np.log(5.0), 0.6, n), amount)
    remote = channel != CHANNELS.index(Channel.CARD_PRESENT)
    new_device = (remote & (rng.random(n) < profile.new_device_rate)).astype(np.int64)
    foreign_p = np.where(channel == CHANNELS.index(Channel.CARD_NOT_PRESENT), 2.0, 1.0) * profile.foreign_rate
    foreign = (rng.random(n) < foreign_p).astype(np.int64)
    batch.add(cust, term, time_s, np.maximum(amount, 1.0), new_device, foreign, Typology.NONE, warmup)


def _victims(pop: _Population, n: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    return rng.choice(len(pop.cust_rate), size=n, p=pop.cust_rate / pop.cust_rate.sum())


def _compromised_terminal(pop: _Population, n: int, batch: _Batch, rng: np.random.Generator) -> None:
    if n <= 0:
        return
    cp_terms = np.flatnonzero(pop.term_channel == CHANNELS.index(Channel.CARD_PRESENT))
    # Fuel pumps, ATMs and small shops with weak controls are the usual
    # targets; a fraud ring then cashes out cloned cards there repeatedly.
    w = 0.2 + pop.term_risk[cp_terms]
    n_bad = int(min(len(cp_terms), max(1, round(n / 20))))
    bad = rng.choice(cp_terms, size=n_bad, replace=False, p=w / w.sum())
    starts = rng.uniform(0.0, HISTORY_DAYS - 10.0, n_bad)
    lengths = rng.uniform(14.0, 35.0, n_bad)
    which = rng.integers(0, n_bad, n)
    start = starts[which]
    end = np.minimum(start + lengths[which], float(HISTORY_DAYS))
    day_f = rng.uniform(start, end)
    # Cash-outs cluster in the evening and night, when the site is quiet.
    hours = np.mod(rng.normal(22.0, 3.0, n), 24.0)
    time_s = np.floor(day_f) * SECONDS_PER_DAY + hours * 3600.0
    cust = _victims(pop, n, rng)
    amount = pop.cust_median[cust] * rng.lognormal(0.6, 0.5, n)
    zeros = np.zeros(n, dtype=np.int64)
    foreign = (rng.random(n) < 0.03).astype(np.int64)
    batch.add(cust, bad[which], time_s, np.maximum(amount, 1.0), zeros, foreign, Typology.COMPROMISED_TERMINAL)


def _card_not_present(pop: _Population, n: int, batch: _Batch, rng: np.random.Generator) -> None:
    if n <= 0:
        return
    channel = np.full(n, CHANNELS.index(Channel.CARD_NOT_PRESENT), dtype=np.int64)
    # Fraudsters cash out at merchants whose goods resell easily.
    term = _pick_terminals(pop, channel, pop.term_popularity * pop.term_risk**3, rng)
    day = rng.integers(0, HISTORY_DAYS, n)
    # Night in the cardholder's time zone: the fraudster is elsewhere.
    hours = np.where(rng.random(n) < 0.65, rng.uniform(0.0, 6.0, n), rng.uniform(0.0, 24.0, n))
    time_s = day * SECONDS_PER_DAY + hours * 3600.0
    cust = _victims(pop, n, rng)
    amount = rng.lognormal(np.log(150.0), 0.7, n)
    new_device = (rng.random(n) < 0.25).astype(np.int64)
    foreign = (rng.random(n) < 0.6).astype(np.int64)
    batch.add(cust, term, time_s, amount, new_device, foreign, Typology.CARD_NOT_PRESENT)


def _account_takeover(pop: _Population, n: int, batch: _Batch, rng: np.random.Generator) -> None:
    if n <= 0:
        return
    # Bursts of 3 to 8 transfers per taken-over account.
    lengths = rng.integers(3, 9, n)
    n_bursts = int(np.searchsorted(np.cumsum(lengths), n) + 1)
    lengths = lengths[:n_bursts]
    lengths[-1] -= int(lengths.sum() - n)
    burst = np.repeat(np.arange(n_bursts), lengths)
    victim = _victims(pop, n_bursts, rng)
    start = rng.integers(0, HISTORY_DAYS, n_bursts) * SECONDS_PER_DAY + rng.uniform(0, 24, n_bursts) * 3600.0
    offset = rng.uniform(0.0, rng.uniform(0.5, 6.0, n_bursts)[burst] * 3600.0)
    time_s = np.minimum(start[burst] + offset, HISTORY_DAYS * SECONDS_PER_DAY - 1.0)
    cust = victim[burst]
    ob = CHANNELS.index(Channel.ONLINE_BANKING)
    cnp = CHANNELS.index(Channel.CARD_NOT_PRESENT)
    channel = np.where(rng.random(n) < 0.75, ob, cnp).astype(np.int64)
    term = _pick_terminals(pop, channel, pop.term_popularity * (0.1 + pop.term_risk) ** 2, rng)
    amount = pop.cust_median[cust] * rng.lognormal(np.log(6.0), 0.5, n)
    new_device = (rng.random(n_bursts) < 0.9).astype(np.int64)[burst]
    foreign = (rng.random(n_bursts) < 0.15).astype(np.int64)[burst]
    batch.add(cust, term, time_s, amount, new_device, foreign, Typology.ACCOUNT_TAKEOVER)


def _high_amount_outlier(
    profile: InstitutionProfile, pop: _Population, n: int, batch: _Batch, rng: np.random.Generator
) -> None:
    if n <= 0:
        return
    cust = _victims(pop, n, rng)
    u = rng.random(n)
    channel = (u[:, None] > pop.cust_channel_cdf[cust]).sum(axis=1).astype(np.int64)
    term = _pick_terminals(pop, channel, pop.term_popularity, rng)
    day = rng.integers(0, HISTORY_DAYS, n)
    hours = _legit_hours(n, pop.cust_night_owl[cust], rng)
    time_s = day * SECONDS_PER_DAY + hours * 3600.0
    amount = pop.cust_median[cust] * rng.lognormal(np.log(18.0), 0.5, n)
    remote = channel != CHANNELS.index(Channel.CARD_PRESENT)
    new_device = (remote & (rng.random(n) < profile.new_device_rate)).astype(np.int64)
    foreign = (rng.random(n) < profile.foreign_rate).astype(np.int64)
    batch.add(cust, term, time_s, amount, new_device, foreign, Typology.HIGH_AMOUNT_OUTLIER)


def _window_positions(keys: npt.NDArray[np.float64], lows: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    return np.searchsorted(keys, lows, side="left").astype(np.int64)


def generate_institution(profile: InstitutionProfile, n_rows: int, seed: int) -> pd.DataFrame:
    """Simulate ``n_rows`` labelled transactions for one institution.

    Parameters
    ----------
    profile
        The institution's behaviour and fraud profile.
    n_rows
        Number of transactions to return (the warm-up history is extra and
        not returned).
    seed
        Seed of ``numpy.random.default_rng``; the same seed gives an
        identical frame.

    Returns
    -------
    pandas.DataFrame
        One row per transaction in time order, with the raw columns listed
        in :data:`fraud.features.RAW_COLUMNS`, the ids
        (``transaction_id``, ``customer_id``, ``terminal_id``), ``typology``
        and the label ``is_fraud`` (0/1). Aggregates count only the
        customer's *earlier* transactions; a customer without earlier
        transactions in a window has count 0 and mean equal to the current
        amount. ``terminal_fraud_rate_28d`` is the share of frauds among the
        terminal's transactions between 35 and 7 days earlier (frauds are
        reported a week late), 0 when there were none.

    Raises
    ------
    ConfigError
        If ``n_rows`` or ``seed`` is invalid.
    """
    if not isinstance(n_rows, int | np.integer) or isinstance(n_rows, bool) or not 100 <= n_rows <= 10_000_000:
        raise ConfigError(f"n_rows must be an int in [100, 1e7], got {n_rows!r}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    pop = _population(profile, n_rows, rng)

    n_fraud = int(round(n_rows * profile.fraud_rate))
    mix = np.array([profile.typology_mix[t] for t in FRAUD_TYPOLOGIES])
    per_typology = rng.multinomial(n_fraud, mix)
    batch = _Batch()
    _legit(profile, pop, n_rows - n_fraud, 0, HISTORY_DAYS, False, batch, rng)
    _legit(profile, pop, (n_rows - n_fraud) * WARMUP_DAYS // HISTORY_DAYS, -WARMUP_DAYS, WARMUP_DAYS, True, batch, rng)
    _compromised_terminal(pop, int(per_typology[0]), batch, rng)
    _card_not_present(pop, int(per_typology[1]), batch, rng)
    _account_takeover(pop, int(per_typology[2]), batch, rng)
    _high_amount_outlier(profile, pop, int(per_typology[3]), batch, rng)

    cust = np.concatenate(batch.customer)
    term = np.concatenate(batch.terminal)
    t = np.concatenate(batch.time_s)
    amount = np.concatenate(batch.amount)
    typo = np.concatenate(batch.typology)
    warm = np.concatenate(batch.warmup)
    is_fraud = (typo != 0).astype(np.int64)

    # Customer aggregates over strictly earlier transactions. Keys sort by
    # customer, then time; a window is a contiguous run found by searchsorted.
    span = (HISTORY_DAYS + WARMUP_DAYS + 2) * SECONDS_PER_DAY
    offset = (WARMUP_DAYS + 1) * SECONDS_PER_DAY
    order = np.lexsort((np.arange(len(t)), t, cust))
    key = cust[order] * span + (t[order] + offset)
    amt_sorted = amount[order]
    csum = np.concatenate([[0.0], np.cumsum(amt_sorted)])
    pos = np.arange(len(key))
    agg: dict[str, npt.NDArray[np.float64]] = {}
    for days in (1, 7, 30):
        lo = _window_positions(key, key - days * SECONDS_PER_DAY)
        count = pos - lo
        total = csum[pos] - csum[lo]
        mean = np.where(count > 0, total / np.maximum(count, 1), amt_sorted)
        agg[f"customer_tx_count_{days}d"] = _unsort(count.astype(np.float64), order)
        agg[f"customer_mean_amount_{days}d"] = _unsort(np.round(mean, 2), order)
    same_prev = np.concatenate([[False], cust[order][1:] == cust[order][:-1]])
    gap = np.where(same_prev, np.diff(t[order], prepend=0.0), MAX_SECONDS_SINCE_LAST_TX)
    gap = np.clip(gap, 0.0, MAX_SECONDS_SINCE_LAST_TX)
    since_last = _unsort(np.round(gap, 1), order)

    # Terminal fraud rate over [t - 35d, t - 7d): what the bank knows today.
    order_t = np.lexsort((np.arange(len(t)), t, term))
    key_t = term[order_t] * span + (t[order_t] + offset)
    fsum = np.concatenate([[0], np.cumsum(is_fraud[order_t])])
    hi = _window_positions(key_t, key_t - FRAUD_REPORT_DELAY_DAYS * SECONDS_PER_DAY)
    lo = _window_positions(key_t, key_t - (FRAUD_REPORT_DELAY_DAYS + TERMINAL_WINDOW_DAYS) * SECONDS_PER_DAY)
    n_window = hi - lo
    rate = np.where(n_window > 0, (fsum[hi] - fsum[lo]) / np.maximum(n_window, 1), 0.0)
    term_rate = _unsort(np.round(rate, 6), order_t)

    keep = ~warm
    frame = pd.DataFrame(
        {
            "tx_time_s": np.round(t[keep], 1),
            "customer_idx": cust[keep],
            "terminal_idx": term[keep],
            "amount": amount[keep],
            "channel_idx": pop.term_channel[term[keep]],
            "merchant_category": np.array([c[0] for c in _CATEGORIES])[pop.term_category[term[keep]]],
            "merchant_risk": np.round(pop.term_risk[term[keep]], 4),
            "terminal_fraud_rate_28d": term_rate[keep],
            **{k: v[keep] for k, v in agg.items()},
            "seconds_since_last_tx": since_last[keep],
            "new_device": np.concatenate(batch.new_device)[keep],
            "foreign_country": np.concatenate(batch.foreign)[keep],
            "typology_idx": typo[keep],
            "is_fraud": is_fraud[keep],
        }
    )
    frame = frame.sort_values(["tx_time_s", "customer_idx"], kind="stable").reset_index(drop=True)
    return _finish_frame(profile.name, frame)


def _unsort(values: npt.NDArray[Any], order: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    out = np.empty_like(values)
    out[order] = values
    return out


def _finish_frame(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    n = len(frame)
    t = frame["tx_time_s"].to_numpy()
    day = np.floor(t / SECONDS_PER_DAY).astype(np.int64)
    dow = np.mod(day, 7)
    for count_col in ("customer_tx_count_1d", "customer_tx_count_7d", "customer_tx_count_30d"):
        frame[count_col] = frame[count_col].astype(np.int64)
    out = pd.DataFrame(
        {
            "transaction_id": [f"{name}-tx{i:08d}" for i in range(n)],
            "customer_id": [f"{name}-c{i:06d}" for i in frame["customer_idx"].to_numpy()],
            "terminal_id": [f"{name}-t{i:06d}" for i in frame["terminal_idx"].to_numpy()],
            "tx_time_s": t,
            "day": day,
            "hour": np.round((t - day * SECONDS_PER_DAY) / 3600.0, 4),
            "day_of_week": dow,
            "is_weekend": (dow >= 5).astype(np.int64),
            "amount": frame["amount"].to_numpy(),
            "channel": np.array([str(c) for c in CHANNELS])[frame["channel_idx"].to_numpy()],
            "merchant_category": frame["merchant_category"].to_numpy(),
        }
    )
    for col in (
        "merchant_risk",
        "terminal_fraud_rate_28d",
        "customer_tx_count_1d",
        "customer_tx_count_7d",
        "customer_tx_count_30d",
        "customer_mean_amount_1d",
        "customer_mean_amount_7d",
        "customer_mean_amount_30d",
    ):
        out[col] = frame[col].to_numpy()
    out["amount_to_mean_30d"] = np.round(out["amount"] / out["customer_mean_amount_30d"], 4)
    for col in ("seconds_since_last_tx", "new_device", "foreign_country"):
        out[col] = frame[col].to_numpy()
    out["typology"] = np.array([str(x) for x in TYPOLOGIES])[frame["typology_idx"].to_numpy()]
    out["is_fraud"] = frame["is_fraud"].to_numpy()
    return out


# ---------------------------------------------------------------------------
# Seeds and splits
# ---------------------------------------------------------------------------


def institution_seed(seed: int, name: str) -> int:
    """Derive an institution's generator seed from the federation seed.

    Hash-derived, so an institution's data depends only on the federation
    seed and its own name, not on which other institutions take part.
    """
    digest = hashlib.sha256(f"{GENERATOR_VERSION}/seed/{int(seed)}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def split_train_test(
    frame: pd.DataFrame, test_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split a generated frame into train and test, deterministically.

    Stratified by typology, hence also by label; both parts keep the frame's
    (time) order. ``frame`` is not modified.

    Returns
    -------
    train, test : pandas.DataFrame
        About ``test_fraction`` of each typology goes to ``test``.
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    rng = np.random.default_rng(seed)
    typology = frame["typology"].to_numpy()
    test_mask = np.zeros(len(frame), dtype=bool)
    for value in sorted(set(typology.tolist())):
        idx = np.flatnonzero(typology == value)
        n_test = int(round(len(idx) * test_fraction))
        test_mask[rng.permutation(idx)[:n_test]] = True
    return frame[~test_mask].reset_index(drop=True), frame[test_mask].reset_index(drop=True)
