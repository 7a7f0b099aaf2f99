"""A dishonest server against fedfraud's real ClientApp: every attack fails.

For each attack of issue 9 the test first runs it against **stock Flower**
(``secaggplus_mod``, :mod:`stock_flower`), where it recovers an individual
update or histogram, then against **fedfraud's** ClientApp with real site
folders and data (:mod:`hardened_driver`), where the institution refuses with
a named reason, nothing individual comes back, and the refusal is in the
institution's own log (the server's audit log is covered by the dishonest
ServerApp in ``test_dishonest_serverapp.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from client.fraud_client import FraudClient
from core.wire import find_refusals
from secagg import hardened as hc
from secagg.protocol import Field, Stage

from .hardened_driver import (
    NAMES,
    Party,
    advert_of,
    consistency,
    global_model,
    honest_aggregate,
    listing,
    make_federation,
    parties,
    play_until_masked,
    send,
    setup_fields,
    unmask_fields,
)
from .stock_flower import (
    SecAggConfig,
    differencing,
    fake_peers_sybil,
    known_histogram,
    overlap_at_unmask,
    stock_victim,
    stock_victims,
)


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    """Run ``call``; it must raise a refusal. Returns the named rules."""
    with pytest.raises(Exception) as info:
        call(*args, **kwargs)
    tokens = find_refusals(str(info.value))
    assert tokens, f"not a named refusal: {info.value}"
    return " | ".join(rule for token in tokens for rule in token.rules)


def own_log(config: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The institution's own refusal log."""
    path = Path(config["sites-dir"]) / name / "audit" / "refusals.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture()
def federation(tmp_path: Path) -> dict[str, Any]:
    """A fresh federation (own ledger) for each test."""
    return make_federation(tmp_path)


def max_error(a: Sequence[Any], b: Sequence[Any]) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - y))) for x, y in zip(a, b))


# -- the honest protocol works (so the refusals below are the defences) -------------


def test_honest_round_through_the_real_clientapp_unmasks_the_sum(federation: dict[str, Any]) -> None:
    victims = parties(federation)
    transcript = play_until_masked(victims, task="evaluate")
    summed = honest_aggregate(victims, transcript)
    # Evaluation vectors are whole numbers summed exactly: score counts, a
    # fixed-point loss, the test count, all non-negative and the histograms
    # adding up to the test count of the three institutions.
    assert summed.min() >= 0 and summed.max() > 0
    bins = (summed.size - 2) // 4
    assert int(summed[: 2 * bins].sum()) == int(summed[-1])
    # Each institution's counts are hidden in its masked vector: none of them
    # looks like a quantized vector (uniform words, not values near Q/2).
    for vector in transcript.masked.values():
        assert abs(float(np.mean(vector)) / 2**32 - 0.5) < 0.05


# -- attack 1: overlap at unmask --------------------------------------------------


def test_overlap_at_unmask(federation: dict[str, Any]) -> None:
    # Stock Flower: bank-a's update comes back.
    stock = stock_victims(num_examples=5000)
    recovered = overlap_at_unmask(stock, stock[0].node_id, SecAggConfig(sample_num=3))
    assert max_error(recovered, stock[0].update) < 1e-3

    # fedfraud: honest up to the consistency round, then bank-a listed as
    # active and dead to the others, and to bank-b its own id as dead.
    victims = parties(federation)
    bank_a, bank_b, insurer_c = victims
    transcript = play_until_masked(victims)
    nodes = [p.node_id for p in victims]
    consistency(victims, transcript, nodes)
    overlap = unmask_fields(transcript, nodes, [bank_a.node_id])
    assert "secagg.overlap" in refused(send, insurer_c, Stage.UNMASK, overlap)
    self_dead = unmask_fields(transcript, [bank_a.node_id, insurer_c.node_id], [bank_b.node_id])
    assert "secagg.overlap" in refused(send, bank_b, Stage.UNMASK, self_dead)
    # A dead list that the signed survivor set does not imply is refused too.
    fake_dead = unmask_fields(transcript, [bank_b.node_id], [bank_a.node_id])
    bank_a_share = refused(send, bank_a, Stage.UNMASK, fake_dead)
    assert "secagg" in bank_a_share
    # Nothing was released: every victim has forgotten the round.
    assert "out of order" in refused(send, bank_a, Stage.UNMASK, unmask_fields(transcript, nodes, []))
    assert any("secagg.overlap" in r for e in own_log(federation, "insurer-c") for r in e["rules"])


def test_unmask_without_consistency_signatures_releases_nothing(federation: dict[str, Any]) -> None:
    victims = parties(federation)
    transcript = play_until_masked(victims)
    nodes = [p.node_id for p in victims]
    consistency(victims, transcript, nodes)
    # The server shows only one signature (its own claim of the survivors).
    one = unmask_fields(transcript, nodes, [])
    one[Field.SIGNERS], one[Field.SIGNATURES] = one[Field.SIGNERS][:1], one[Field.SIGNATURES][:1]
    assert "secagg.consistency" in refused(send, victims[1], Stage.UNMASK, one)
    # Signatures over a different survivor set (split view) do not count.
    forged = Ed25519PrivateKey.generate()
    bad = unmask_fields(transcript, nodes, [])
    bad[Field.SIGNATURES] = [forged.sign(b"x")] * len(bad[Field.SIGNERS])
    assert "secagg.consistency" in refused(send, victims[2], Stage.UNMASK, bad)


def test_split_view_consistency_is_refused(federation: dict[str, Any]) -> None:
    # The server claims survivors {a, b} to bank-a while c also sent its vector:
    # bank-a signs {a, b}; the others' signatures over {a, b, c} do not count.
    victims = parties(federation)
    bank_a, bank_b, insurer_c = victims
    transcript = play_until_masked(victims)
    nodes = [p.node_id for p in victims]
    send(bank_a, Stage.CONSISTENCY, {Field.SURVIVORS: [bank_a.node_id, bank_b.node_id]})
    consistency([bank_b, insurer_c], transcript, nodes)
    fields = unmask_fields(transcript, [bank_a.node_id, bank_b.node_id], [insurer_c.node_id])
    assert "secagg.consistency" in refused(send, bank_a, Stage.UNMASK, fields)


def test_cohort_shrunk_at_consistency_is_refused(tmp_path: Path) -> None:
    # bank-a's policy needs a cohort of 3; the server lets all three share
    # keys and send vectors, then claims only two survived, so that the sum
    # it unmasks combines fewer institutions than bank-a accepted.
    from tests.integration.federation import edit_site_policy

    config = make_federation(tmp_path)
    edit_site_policy(
        Path(config["sites-dir"]) / "bank-a" / "policy.toml",
        lambda p: p["protection"].update(min_cohort_size=3),
    )
    victims = parties(config)
    bank_a, bank_b, _ = victims
    play_until_masked(victims)
    rules = refused(send, bank_a, Stage.CONSISTENCY, {Field.SURVIVORS: [bank_a.node_id, bank_b.node_id]})
    assert "protection.min_cohort_size" in rules


# -- attack 2: fake peers (sybil) and key substitution ---------------------------


def _fake_advert(node_id: int, name: str, binding: hc.Binding) -> hc.Advertisement:
    """Keys the server made itself, signed with a key the server made too."""
    return hc.advertise(Ed25519PrivateKey.generate(), binding, node_id, name, hc.RoundKeys.generate())


@pytest.mark.parametrize("task", ["train", "evaluate"])
def test_fake_peers_sybil(federation: dict[str, Any], task: str) -> None:
    # Stock Flower: a lone victim and two server-made peers give its update.
    lone = stock_victim("bank-a", num_examples=5000)
    recovered = fake_peers_sybil(lone, SecAggConfig(sample_num=3))
    assert max_error(recovered, lone.update) < 1e-3
    if task == "evaluate":
        histogram = stock_victim("bank-a", update=known_histogram("bank-a"), num_examples=100000)
        assert max_error(fake_peers_sybil(histogram, SecAggConfig(sample_num=3)), histogram.update) < 1e-4

    # fedfraud: bank-a alone, the server relays two peers under real names...
    (bank_a,) = parties(federation, ["bank-a"])
    reply = send(bank_a, Stage.SETUP, setup_fields(task))
    binding = hc.Binding("fedfraud-demo", 1, 1, task)
    fakes = [_fake_advert(902, "bank-b", binding), _fake_advert(903, "insurer-c", binding)]
    rules = refused(send, bank_a, Stage.SHARE_KEYS, listing([advert_of(bank_a, reply), *fakes]))
    assert "does not verify against its pinned key" in rules
    # ... or under names bank-a never pinned.
    send(bank_a, Stage.SETUP, setup_fields(task), server_round=2)
    binding = hc.Binding("fedfraud-demo", 1, 2, task)
    strangers = [_fake_advert(904, "bank-x", binding), _fake_advert(905, "bank-y", binding)]
    reply = send(bank_a, Stage.SETUP, setup_fields(task), server_round=3)
    assert "secagg.unknown-peer" in refused(
        send, bank_a, Stage.SHARE_KEYS, listing([advert_of(bank_a, reply), *strangers]), 3
    )
    # And with only its own advertisement, the cohort is too small for its policy.
    reply = send(bank_a, Stage.SETUP, setup_fields(task), server_round=4)
    rules = refused(send, bank_a, Stage.SHARE_KEYS, listing([advert_of(bank_a, reply)]), 4)
    assert "secagg.threshold" in rules or "min_cohort" in rules


def test_key_substitution(federation: dict[str, Any]) -> None:
    # The server swaps bank-b's round keys for its own, keeping bank-b's signature.
    victims = parties(federation)
    adverts = [advert_of(p, send(p, Stage.SETUP, setup_fields())) for p in victims]
    mine = hc.RoundKeys.generate()
    adverts[1] = hc.Advertisement(
        adverts[1].node_id, "bank-b", mine.seal_public, mine.mask_public, adverts[1].signature
    )
    assert "does not verify" in refused(send, victims[0], Stage.SHARE_KEYS, listing(adverts))


def test_reweighting_by_per_institution_weight_bounds(federation: dict[str, Any]) -> None:
    # With max-weight auto, the server announces the weight bound. It tells
    # bank-a the true row total but bank-b and insurer-c a bound 10**4 times
    # larger, so their updates would count for almost nothing in the "mean".
    # The bound is signed into every advertisement: the institutions see
    # that they were told different things and refuse the round.
    victims = parties(federation)
    bounds = {"bank-a": 100000.0, "bank-b": 1e9, "insurer-c": 1e9}
    adverts = [
        advert_of(p, send(p, Stage.SETUP, setup_fields(**{Field.MAX_WEIGHT: bounds[p.name]})))
        for p in victims
    ]
    for victim in victims:
        assert "does not verify" in refused(send, victim, Stage.SHARE_KEYS, listing(adverts))


# -- attack 3: brute force of the masks ------------------------------------------


def test_bruteforce_of_masks_has_no_small_seed(federation: dict[str, Any]) -> None:
    from .stock_flower import BASE64_ZERO_MASK, fold_seed, real_pairwise_keys, zero_bit_mask

    # Stock Flower: four bits of every folded pairwise seed are always zero.
    assert zero_bit_mask(real_pairwise_keys(32)) == BASE64_ZERO_MASK != 0

    # fedfraud: mask keys are 32 raw bytes from X25519 through HKDF; over many
    # pairs no bit is constant, no two keys or streams collide, and a flip of
    # any bit of the secret gives an unrelated stream.
    binding = hc.Binding("fedfraud-demo", 1, 1, "train")
    keys = []
    for _ in range(200):
        a, b = hc.RoundKeys.generate(), hc.RoundKeys.generate()
        keys.append(hc.pair_mask_key(a.mask_private, b.mask_public, binding, b"d" * 32, "a", "b"))
    as_ints = [int.from_bytes(k, "big") for k in keys]
    always_zero = ~0 & ((1 << 256) - 1)
    always_one = (1 << 256) - 1
    for value in as_ints:
        always_zero &= ~value
        always_one &= value
    assert always_zero == 0 and always_one == 0
    assert len(set(keys)) == len(keys)
    assert len({fold_seed(k) for k in keys}) == len(keys)
    from secagg.masks import mask_stream

    first = [int(mask_stream(k, 4, 2**32)[0]) for k in keys]
    assert len(set(first)) == len(first)
    base = mask_stream(keys[0], 64, 2**32)
    for bit in range(0, 256, 17):
        flipped = bytearray(keys[0])
        flipped[bit // 8] ^= 1 << (bit % 8)
        other = mask_stream(bytes(flipped), 64, 2**32)
        assert np.count_nonzero(base == other) <= 1

    # And a real round's masked vector: coordinate 0 (the weight) is hidden
    # under a uniform word, unlike stock Flower's known quantized weight.
    victims = parties(federation)
    transcript = play_until_masked(victims, task="evaluate")
    quantized_weight = 2**24  # the weight word of ratio 1, what stock Flower would show
    assert all(int(v[0]) != quantized_weight for v in transcript.masked.values())


# -- attack 4: differencing and replay -------------------------------------------


def test_differencing_and_replay(federation: dict[str, Any]) -> None:
    # Stock Flower: {A,B,C} then {A,B} on the same vector gives C's.
    cfg = SecAggConfig(sample_num=3)
    stock = [stock_victim(n, update=known_histogram(n), num_examples=100000) for n in NAMES]
    recovered = differencing(stock, stock[2].node_id, cfg, group_ids=("7", "7"))
    assert max_error(recovered, stock[2].update) < 1e-4

    # fedfraud: the same model evaluated by {A,B,C}, then by {A,B}.
    victims = parties(federation)
    model = global_model()
    transcript = play_until_masked(victims, task="evaluate", server_round=1, model=model)
    honest_aggregate(victims, transcript)
    bank_a, bank_b, _ = victims
    # Replay of round 1 (same run, round, task): refused at setup.
    assert "secagg.one-time" in refused(send, bank_a, Stage.SETUP, setup_fields("evaluate", 2))
    # A new round number, the same model, a smaller cohort: refused.
    with pytest.raises(Exception) as info:
        play_until_masked([bank_a, bank_b], task="evaluate", server_round=3, model=model)
    rules = " ".join(r for t in find_refusals(str(info.value)) for r in t.rules)
    assert "secagg.differencing" in rules
    # A restarted ClientApp (fresh process, no memory) still refuses: the
    # ledger is in the site folder.
    bank_a.restart()
    assert "secagg.one-time" in refused(send, bank_a, Stage.SETUP, setup_fields("evaluate", 3))
    assert any("secagg.differencing" in r for e in own_log(federation, "bank-a") for r in e["rules"])


def test_replay_of_another_runs_or_rounds_messages(federation: dict[str, Any]) -> None:
    victims = parties(federation)
    # Round 1 of run 1: the server keeps bank-b's signed advertisement.
    old = [advert_of(p, send(p, Stage.SETUP, setup_fields(), server_round=1)) for p in victims]
    # Run 2: it replays bank-b's run-1 advertisement (keys it can no longer
    # use against anyone) into bank-a's new round.
    new_a = advert_of(victims[0], send(victims[0], Stage.SETUP, setup_fields(), 1, run_id=2))
    rules = refused(send, victims[0], Stage.SHARE_KEYS, listing([new_a, old[1], old[2]]), 1, 2)
    assert "does not verify" in rules
    # Round 2 of run 1: sealed shares from round 1 do not open.
    transcript = play_until_masked(victims, task="evaluate", server_round=5)
    for party in victims:
        send(party, Stage.SETUP, setup_fields("evaluate"), server_round=6)
    adverts = [
        advert_of(p, send(p, Stage.SETUP, setup_fields("evaluate"), server_round=7)) for p in victims
    ]
    for party in victims:
        send(party, Stage.SHARE_KEYS, listing(adverts), 7)
    stale = transcript.boxes[victims[0].node_id]
    from flwr.common import FitIns, ndarrays_to_parameters

    fitins = FitIns(ndarrays_to_parameters(global_model()), {"server-round": 7, "task": "evaluate"})
    fields = {Field.SOURCES: [s for s, _ in stale], Field.BOXES: [b for _, b in stale]}
    assert "fail authentication" in refused(send, victims[0], Stage.COLLECT, fields, 7, 1, fitins)


# -- parameters from the institution's side --------------------------------------


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({Field.THRESHOLD: 1}, "run.threshold"),
        ({Field.NUM_SHARES: 2}, "run.num-shares"),
        ({Field.CLIPPING_RANGE: 64.0}, "run.clipping-range"),
        ({Field.MODULUS_RANGE: 2**20}, "run.modulus-range"),
    ],
)
def test_server_chosen_parameters_are_refused(
    federation: dict[str, Any], change: dict[str, Any], rule: str
) -> None:
    (bank_a,) = parties(federation, ["bank-a"])
    assert rule in refused(send, bank_a, Stage.SETUP, setup_fields(**change))


# -- malformed and oversized messages at every stage -----------------------------


@pytest.mark.parametrize(
    ("stage", "fields"),
    [
        (Stage.SETUP, {Field.TASK: "train"}),
        (Stage.SETUP, setup_fields(**{Field.THRESHOLD: "2"})),
        (Stage.SETUP, setup_fields(task="exfiltrate")),
        (Stage.SHARE_KEYS, {Field.NODES: [1, 2], Field.INSTITUTIONS: ["bank-a"]}),
        (Stage.SHARE_KEYS, {Field.NODES: list(range(2000))}),
        (Stage.COLLECT, {Field.SOURCES: [102], Field.BOXES: [b"\x00" * 10_000]}),
        (Stage.CONSISTENCY, {Field.SURVIVORS: ["bank-a"]}),
        (Stage.UNMASK, {Field.SIGNERS: [101], Field.SIGNATURES: [b"x" * 65]}),
    ],
    ids=["setup-missing", "setup-type", "setup-task", "keys-lengths", "keys-oversized",
         "collect-oversized", "consistency-type", "unmask-oversized"],
)
def test_malformed_and_oversized_messages(
    federation: dict[str, Any], stage: Stage, fields: dict[str, Any]
) -> None:
    victims = parties(federation)
    # Bring every victim honestly to the stage before the one attacked.
    if stage in (Stage.CONSISTENCY, Stage.UNMASK):
        transcript = play_until_masked(victims)
        if stage is Stage.UNMASK:
            consistency(victims, transcript, [p.node_id for p in victims])
    elif stage is not Stage.SETUP:
        adverts = [advert_of(p, send(p, Stage.SETUP, setup_fields())) for p in victims]
        if stage is Stage.COLLECT:
            for p in victims:
                send(p, Stage.SHARE_KEYS, listing(adverts))
    rules = refused(send, victims[0], stage, fields)
    assert rules.startswith(("secagg.", "run.", "protection."))
