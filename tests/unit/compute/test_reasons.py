"""Reasons: selection by contribution, plain sentences, bulk JSON encoding."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compute import filters, reasons, scoring, signals


def reasons_of(pop, a, b, params=None, reason_params=None):
    scored = scoring.score_pairs(pop, a, b, params or scoring.ScoreParams(reciprocal=False))
    slots = reasons.select_reasons(pop, scored, reason_params)
    texts = reasons.encode_reasons_json(pop, scored, slots)
    return scored, slots, [json.loads(t) for t in texts]


PROFILE_WEIGHTS = scoring.SignalWeights(
    quiz=0.25,
    interest=0.20,
    rating_quality=0.15,
    rating_fit=0.10,
    newness=0.10,
    proximity=0.20,
    appeal=0.0,
    reciprocity=0.0,
)


def test_four_users_reasons_are_hand_checkable(four_users):
    params = scoring.ScoreParams(reciprocal=False, weights=PROFILE_WEIGHTS)
    _, _, decoded = reasons_of(four_users, [0], [1], params)
    # Contributions: quiz 0.25·1, interest 0.20·1, proximity 0.20·exp(-8.9/25) ≈ 0.14 above
    # rating_fit 0.10·…; rating quality 0.6 and newness are below their thresholds.
    assert decoded[0] == [
        {"code": "quiz_match", "params": {}, "text": "Your quiz answers line up closely"},
        {
            "code": "shared_interests",
            "params": {"interests": ["hiking", "jazz"]},
            "text": "You both love hiking and jazz",
        },
        {"code": "nearby", "params": {"km": 10}, "text": "About 10 km away"},
    ]


@pytest.mark.parametrize(
    ("km", "bucket"), [(0.3, 1), (1.2, 5), (7.4, 5), (8.0, 10), (49.0, 50), (123.0, 120)]
)
def test_distance_buckets(km, bucket):
    assert reasons.distance_bucket_km(np.array([km]))[0] == bucket


def test_less_than_one_km_and_unnamed_interests(make_population):
    man = {"gender": 1, "seeking": 0b001, "lat": 52.521, "interests": {99: 0.5, 11: 0.5}}
    pop = make_population([{"quiz": None, "interests": {99: 0.5, 11: 0.5}}, man])
    _, _, decoded = reasons_of(pop, [0], [1])
    by_code = {r["code"]: r for r in decoded[0]}
    assert by_code["nearby"]["text"] == "Less than 1 km away"
    # Interest 99 is not in the catalogue, so only jazz is named.
    assert by_code["shared_interests"]["params"] == {"interests": ["jazz"]}
    assert by_code["shared_interests"]["text"] == "You both love jazz"


def test_missing_signals_never_become_reasons(make_population):
    man = {"gender": 1, "seeking": 0b001, "lat": np.nan, "lon": np.nan}
    pop = make_population(
        [{"quiz": None, "interests": {}, "preference": None}, {**man, "account_age_days": 0}]
    )
    _, _, decoded = reasons_of(pop, [0], [1])
    assert [r["code"] for r in decoded[0]] == ["new_here"]


def test_reasons_follow_largest_contributions(make_random_population):
    pop = make_random_population(80, np.random.default_rng(21))
    a, b = np.meshgrid(np.arange(80), np.arange(80), indexing="ij")
    keep, _ = filters.mutual_filter(pop, a.ravel(), b.ravel())
    scored, slots, decoded = reasons_of(
        pop, a.ravel()[keep], b.ravel()[keep], scoring.ScoreParams(top_k=1000)
    )
    thresholds = reasons.ReasonParams().thresholds()
    code_of = {reasons.REASON_CODES[name]: i for i, name in enumerate(signals.SIGNAL_NAMES)}
    assert any(len(d) == 3 for d in decoded)
    for p in range(len(scored)):
        sub = scored.subscores[p].astype(np.float64)
        eligible = []
        for i in range(len(signals.SIGNAL_NAMES)):
            missing = (int(scored.missing[p]) >> i) & 1
            if missing or sub[i] < thresholds[i]:
                continue
            if i == code_of["shared_interests"] and not any(
                x in set(pop.catalogue_interest_ids.tolist()) for x in scored.shared_interest_ids[p]
            ):
                continue
            eligible.append((-scored.weights[i] * sub[i], i))
        expected = [i for _, i in sorted(eligible)[:3]]
        assert [code_of[r["code"]] for r in decoded[p]] == expected
        assert [int(s) for s in slots[p] if s >= 0] == expected


def every_passing_pair_scored(make_random_population):
    """60 random users, every pair that passes the filters scored, and its reasons slots."""
    pop = make_random_population(60, np.random.default_rng(22))
    a, b = np.meshgrid(np.arange(60), np.arange(60), indexing="ij")
    keep, _ = filters.mutual_filter(pop, a.ravel(), b.ravel())
    scored = scoring.score_pairs(pop, a.ravel()[keep], b.ravel()[keep])
    return pop, scored, reasons.select_reasons(pop, scored)


def test_bulk_encoding_equals_per_row_json(make_random_population):
    pop, scored, slots = every_passing_pair_scored(make_random_population)
    texts = reasons.encode_reasons_json(pop, scored, slots)
    assert texts.shape == (len(scored),)
    for text in texts:
        decoded = json.loads(text)
        assert json.dumps(decoded, ensure_ascii=False, separators=(", ", ": ")) == text


def test_no_reasons_encode_as_empty_list(make_population):
    pop = make_population([{}, {"gender": 1, "seeking": 0b001}])
    scored = scoring.score_pairs(pop, [0], [1])
    slots = reasons.select_reasons(pop, scored, reasons.ReasonParams(max_reasons=0))
    assert reasons.encode_reasons_json(pop, scored, slots).tolist() == ["[]"]
    with pytest.raises(ValueError, match=r"slots must be \(1, 3\)"):
        reasons.encode_reasons_json(pop, scored, slots[:, :2])


def test_interest_sets_too_large_to_pack_encode_the_same(make_random_population, monkeypatch):
    # Regression: with a catalogue of more than ~2.1M interests a set of three catalogue
    # positions no longer packs into an int64; the row-wise unique must then take over.
    pop, scored, slots = every_passing_pair_scored(make_random_population)
    packed = reasons.encode_reasons_json(pop, scored, slots)
    assert (slots == signals.SIGNAL_NAMES.index("interest")).any()
    monkeypatch.setattr(reasons, "_PACKED_SET_LIMIT", 1)
    assert reasons.encode_reasons_json(pop, scored, slots).tolist() == packed.tolist()


def test_behaviour_signals_give_their_reasons(make_population):
    """The two behaviour signals (issue 11, item 2) are offered as reasons with their
    sentences when they carry the score: b's appeal to a's taste, and b likely to like a."""
    pop = make_population(
        [
            {"user_id": 1, "taste": (1.0, 0.0, 0.0), "appeal": (0.0, 1.0, 0.0), "like_rate": 0.2},
            {
                "user_id": 2,
                "gender": 1,
                "seeking": 0b001,
                "taste": (0.0, 1.0, 0.0),
                "appeal": (0.9, 0.0, 0.0),
                "like_rate": 0.95,
                "quiz": (0.0, 1.0, 0.0, 0.0),
                "interests": {12: 1.0},
                "lat": 48.0,
            },
        ]
    )
    weights = scoring.SignalWeights(
        **{s.name: 0.0 for s in signals.SIGNALS} | {"appeal": 1.0, "reciprocity": 1.0}
    )
    scored, _, decoded = reasons_of(
        pop, [0], [1], scoring.ScoreParams(reciprocal=False, weights=weights)
    )
    # appeal = (1 + 0.9) / 2; reciprocity = (1 + 1·1) / 2 (b likes a back).
    assert scored.subscore("appeal")[0] == pytest.approx(0.95)
    assert scored.subscore("reciprocity")[0] == pytest.approx(1.0)
    codes = [r["code"] for r in decoded[0]]
    assert codes[:2] == ["likely_mutual", "your_type"]
    assert decoded[0][0]["text"] == "Likely to like you back"
