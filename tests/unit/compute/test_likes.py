"""compute.likes: validation, shrunk like rates and the taste/appeal model on tiny matrices."""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from compute import likes

PARAMS = likes.LikeParams(
    dim=4, min_decisions=2, prior_weight=2.0, pass_weight=1.0, regularisation=0.0
)


def decisions(rows: list[tuple[int, int, str]], known: list[int] | None = None) -> likes.Decisions:
    users = np.array([r[0] for r in rows], dtype=np.int64)
    targets = np.array([r[1] for r in rows], dtype=np.int64)
    kinds = np.array([r[2] for r in rows], dtype=object)
    ids = sorted({*users.tolist(), *targets.tolist()}) if known is None else known
    return likes.validate_decisions(users, targets, kinds, np.array(ids, dtype=np.int64))


# Deciders 1-4 about targets 10-13. 1 likes everyone, 2 likes no one, 3 and 4 decide alike.
WORLD = [
    *((1, t, "like") for t in (10, 11, 12, 13)),
    *((2, t, "pass") for t in (10, 11, 12, 13)),
    (3, 10, "like"),
    (3, 11, "like"),
    (3, 12, "pass"),
    (4, 10, "like"),
    (4, 11, "like"),
    (4, 12, "pass"),
    (3, 13, "block"),
]


def test_bad_rows_are_counted_under_their_first_reason_and_blocks_set_aside() -> None:
    found = decisions(
        [
            (1, 2, "like"),
            (1, 3, "pass"),
            (1, 4, "wink"),  # unknown_kind
            (1, 99, "like"),  # unknown_user
            (2, 2, "like"),  # self_decision
            (3, 1, "block"),
        ],
        known=[1, 2, 3, 4],
    )
    assert found.skipped == {
        "unknown_kind": 1,
        "unknown_user": 1,
        "self_decision": 1,
        "duplicate_decision": 0,
    }
    assert found.n_blocks == 1
    assert found.user_ids.tolist() == [1, 1] and found.is_like.tolist() == [True, False]


def test_shrunk_rates_by_hand() -> None:
    found = decisions(WORLD)
    behaviour = likes.like_behaviour(np.array([1, 2, 3, 10, 13, 77]), found, PARAMS)
    # 14 likes and passes (the block is set aside), 8 of them likes: g = 8/14 = 4/7; m = 2.
    g = F(4, 7)
    assert behaviour.global_rate == pytest.approx(float(g))
    assert behaviour.n_blocks == 1
    expected_given = [(4 + 2 * g) / 6, (0 + 2 * g) / 6, (2 + 2 * g) / 5, g, g, g]
    expected_received = [g, g, g, (3 + 2 * g) / 6, (1 + 2 * g) / 4, g]
    assert behaviour.rate_given == pytest.approx([float(x) for x in expected_given], abs=1e-15)
    assert behaviour.rate_received == pytest.approx(
        [float(x) for x in expected_received], abs=1e-15
    )
    assert behaviour.decisions_given.tolist() == [4, 4, 3, 0, 0, 0]
    assert behaviour.likes_given.tolist() == [4, 0, 2, 0, 0, 0]
    assert behaviour.decisions_received.tolist() == [0, 0, 0, 4, 2, 0]
    assert behaviour.likes_received.tolist() == [0, 0, 0, 3, 1, 0]


def test_identical_decisions_give_bit_identical_vectors() -> None:
    found = decisions(WORLD)
    users = np.array([1, 2, 3, 4, 10, 11, 12, 13])
    model = likes.taste_model(users, found, PARAMS, np.random.default_rng(0))
    row = {int(u): i for i, u in enumerate(model.user_ids)}
    # Users 3 and 4 decided alike: the same bits, not merely close.
    assert model.taste[row[3]].tobytes() == model.taste[row[4]].tobytes()
    # Targets 10 and 11 were decided alike by everyone: the same appeal.
    assert model.appeal[row[10]].tobytes() == model.appeal[row[11]].tobytes()
    # Who likes everyone and who likes no one differ.
    assert model.taste[row[1]].tobytes() != model.taste[row[2]].tobytes()


def test_the_rate_coordinates_are_the_shrunk_rates_on_the_decision_scale() -> None:
    found = decisions(WORLD)
    users = np.array([1, 2, 3, 10, 12])
    model = likes.taste_model(users, found, PARAMS, np.random.default_rng(0))
    behaviour = likes.like_behaviour(model.user_ids, found, PARAMS)
    g = behaviour.global_rate
    given = model.has_taste
    received = model.has_appeal
    # pass_weight 1: alpha = 2 (rate_given - g/2) - 1/2, beta likewise with rate_received.
    np.testing.assert_allclose(
        model.taste[given, -2], 2 * (behaviour.rate_given[given] - g / 2) - 0.5, rtol=1e-6
    )
    np.testing.assert_array_equal(model.taste[given, -1], 1.0)
    np.testing.assert_array_equal(model.appeal[received, -2], 1.0)
    np.testing.assert_allclose(
        model.appeal[received, -1], 2 * (behaviour.rate_received[received] - g / 2) - 0.5, rtol=1e-6
    )


def test_rates_alone_predict_a_picky_viewer_and_a_sought_after_target() -> None:
    # dim 2: no component, only the rates: taste_a . appeal_b = 2 (r_a + r_b - g) - 1.
    rates_only = likes.LikeParams(**{**PARAMS.__dict__, "dim": 2, "prior_weight": 0.0})
    found = decisions(WORLD)
    model = likes.taste_model(
        np.array([1, 2, 3, 10, 13]), found, rates_only, np.random.default_rng(0)
    )
    row = {int(u): i for i, u in enumerate(model.user_ids)}
    assert model.singular_values.shape == (0,)

    def p(a: int, b: int) -> float:
        return (1.0 + float(model.taste[row[a]] @ model.appeal[row[b]])) / 2.0

    # g = 8/14. Target 10: liked by 1, 3, 4 of 4 (3/4); 13: liked by 1 of 2 (1/2).
    g = 8 / 14
    assert p(1, 10) == pytest.approx(1.0 + 3 / 4 - g, abs=1e-6)  # likes everyone
    assert p(2, 13) == pytest.approx(0.0 + 1 / 2 - g, abs=1e-6)  # likes no one
    assert p(3, 10) > p(3, 13)  # the more sought-after target


def test_full_rank_reconstructs_every_decision() -> None:
    # 4 components >= the residual's rank (4 deciders), no regularisation: exact.
    full = likes.LikeParams(**{**PARAMS.__dict__, "dim": 6})
    found = decisions(WORLD)
    model = likes.taste_model(
        np.array([1, 2, 3, 10, 12, 13]), found, full, np.random.default_rng(0)
    )
    row = {int(u): i for i, u in enumerate(model.user_ids)}
    score = {
        (a, b): float(model.taste[row[a]] @ model.appeal[row[b]])
        for a in (1, 2, 3)
        for b in (10, 12, 13)
    }
    assert score[(1, 13)] == pytest.approx(1.0, abs=1e-5)
    assert score[(2, 13)] == pytest.approx(-1.0, abs=1e-5)
    assert score[(3, 10)] == pytest.approx(1.0, abs=1e-5)
    assert score[(3, 12)] == pytest.approx(-1.0, abs=1e-5)


def test_too_few_decisions_get_no_vector_and_are_counted() -> None:
    found = decisions([(1, 2, "like"), (1, 3, "like"), (2, 3, "pass"), (4, 3, "like")])
    model = likes.taste_model(np.array([1, 2, 3, 4, 5]), found, PARAMS, np.random.default_rng(0))
    # Taste: only 1 gave 2 decisions. Appeal: only 3 received 2 or more.
    assert model.user_ids.tolist() == [1, 3]
    assert model.has_taste.tolist() == [True, False]
    assert model.has_appeal.tolist() == [False, True]
    assert np.isnan(model.taste[1]).all() and np.isfinite(model.taste[0]).all()
    assert model.skipped == {"too_few_decisions_given": 4, "too_few_decisions_received": 4}


def test_vectors_are_zero_padded_to_dim_and_regularisation_shrinks_them() -> None:
    found = decisions(WORLD)
    users = np.array([1, 2, 3, 4])
    wide = likes.LikeParams(**{**PARAMS.__dict__, "dim": 8})
    plain = likes.taste_model(users, found, wide, np.random.default_rng(0))
    assert plain.taste.shape == (4, 8) and plain.taste.dtype == np.float32
    assert plain.singular_values.shape == (6,)
    assert plain.singular_values[4:].tolist() == [0.0, 0.0]  # 4 deciders: rank <= 4, padded
    strong = likes.LikeParams(**{**wide.__dict__, "regularisation": 1e6})
    gone = likes.taste_model(users, found, strong, np.random.default_rng(0))
    assert not gone.taste[:, :-2].any() and not gone.singular_values.any()
    # The rates stay: regularisation shrinks only what they leave unexplained.
    np.testing.assert_array_equal(gone.taste[:, -2:], plain.taste[:, -2:])


def test_the_sparse_solver_agrees_with_the_dense_one_and_is_deterministic() -> None:
    rng = np.random.default_rng(7)
    n_users, n_rows = 60, 900
    pairs = np.unique(rng.integers(1, n_users + 1, size=(n_rows, 2)), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    # A planted structure: users like those of the same parity.
    kinds = np.where(pairs[:, 0] % 2 == pairs[:, 1] % 2, "like", "pass").astype(object)
    found = likes.validate_decisions(
        pairs[:, 0].copy(), pairs[:, 1].copy(), kinds, np.arange(1, n_users + 1)
    )
    users = np.arange(1, n_users + 1)
    params = likes.LikeParams(
        dim=3, min_decisions=1, prior_weight=0.0, pass_weight=1.0, regularisation=0.5
    )
    dense = likes.taste_model(users, found, params, np.random.default_rng(0))
    sparse = likes.taste_model(users, found, params, np.random.default_rng(0), dense_max_cells=0)
    again = likes.taste_model(users, found, params, np.random.default_rng(0), dense_max_cells=0)
    assert sparse.taste.tobytes() == again.taste.tobytes()
    np.testing.assert_allclose(sparse.singular_values, dense.singular_values, rtol=1e-8)
    np.testing.assert_allclose(sparse.taste, dense.taste, atol=1e-4)
    np.testing.assert_allclose(sparse.appeal, dense.appeal, atol=1e-4)
    # The planted structure is recovered: same parity scores above opposite parity.
    same = (users[:, None] % 2) == (users[None, :] % 2)
    reconstruction = dense.taste @ dense.appeal.T
    assert reconstruction[same].mean() > 0 > reconstruction[~same].mean()


def test_no_decisions_at_all_gives_no_vectors_and_the_prior() -> None:
    found = decisions([], known=[1, 2])
    model = likes.taste_model(np.array([1, 2]), found, PARAMS, np.random.default_rng(0))
    assert model.user_ids.size == 0 and model.taste.shape == (0, 4)
    behaviour = likes.like_behaviour(np.array([1, 2]), found, PARAMS)
    assert behaviour.rate_given.tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("dim", 1, ValueError),
        ("min_decisions", 1.5, ValueError),
        ("pass_weight", 0.0, ValueError),
        ("prior_weight", -1.0, ValueError),
        ("regularisation", "x", ValueError),
        ("regularisation", None, TypeError),
    ],
)
def test_bad_params_are_refused_naming_the_field(field: str, value: object, error: type) -> None:
    with pytest.raises(error, match=field):
        likes.LikeParams(**{**PARAMS.__dict__, field: value})


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="kinds"):
        likes.validate_decisions(np.array([1]), np.array([2]), np.array([1.0]), np.array([1, 2]))
    with pytest.raises(ValueError, match="user_ids must be unique"):
        likes.like_behaviour(np.array([1, 1]), decisions([(1, 2, "like")]), PARAMS)
    with pytest.raises(TypeError, match="rng"):
        likes.taste_model(np.array([1]), decisions([(1, 2, "like")]), PARAMS, 0)  # type: ignore[arg-type]


def _population_decisions(rng: np.random.Generator, taste: bool) -> likes.Decisions:
    """300 deciders × 300 targets, 40 decisions each. With ``taste``, deciders and targets
    fall into two types and a decider likes their own type far more often (a low-rank
    taste); without it, each like is a coin whose odds depend on the decider's and the
    target's openness alone, which the rates already hold."""
    n, per = 300, 40
    open_given, open_received = rng.uniform(0.2, 0.8, n), rng.uniform(0.2, 0.8, n)
    kind_of = rng.integers(0, 2, n)
    rows = []
    for u in range(n):
        for t in rng.choice(n, per, replace=False):
            p = (open_given[u] + open_received[t]) / 2
            if taste:
                p = 0.85 if kind_of[u] == kind_of[t] else 0.15
            rows.append((u + 1, n + t + 1, "like" if rng.random() < p else "pass"))
    return decisions(rows, known=list(range(1, 2 * n + 1)))


AUTO = likes.LikeParams(
    dim=6, min_decisions=5, prior_weight=5.0, pass_weight=1.0, regularisation="auto"
)


def test_auto_keeps_components_where_decisions_show_taste_and_none_where_they_do_not() -> None:
    users = np.arange(1, 601)
    tasteful = likes.taste_model(
        users, _population_decisions(np.random.default_rng(1), True), AUTO, np.random.default_rng(0)
    )
    choice = tasteful.threshold
    assert choice is not None and choice.held_out > likes.MIN_HELD_OUT
    # One taste (two types) explains ~40 % of what the rates leave; the rest is noise.
    assert 1 <= choice.components <= 2
    assert dict(choice.explained)[choice.components] > 0.3
    assert tasteful.singular_values[0] > 10 * max(tasteful.singular_values[1], 1e-9) > 0
    assert 0 < tasteful.regularisation < np.inf

    noise = likes.taste_model(
        users,
        _population_decisions(np.random.default_rng(1), False),
        AUTO,
        np.random.default_rng(0),
    )
    assert noise.threshold is not None and noise.threshold.components == 0
    assert max(share for _, share in noise.threshold.explained) < 0.01
    assert not noise.singular_values.any() and noise.regularisation == np.inf
    components = AUTO.dim - likes.RATE_COORDINATES
    taste = noise.taste[noise.has_taste]
    assert not taste[:, :components].any()  # the rates alone ...
    assert np.isfinite(taste[:, components]).all() and taste[:, components].std() > 0  # ... stay


def test_auto_is_deterministic_and_keeps_no_component_with_too_few_decisions() -> None:
    users = np.arange(1, 601)
    found = _population_decisions(np.random.default_rng(2), True)
    one = likes.taste_model(users, found, AUTO, np.random.default_rng(3))
    two = likes.taste_model(users, found, AUTO, np.random.default_rng(3))
    assert one.threshold == two.threshold
    assert np.array_equal(one.taste, two.taste, equal_nan=True)
    assert np.array_equal(one.appeal, two.appeal, equal_nan=True)

    rows = [(1, 2, "like"), (1, 3, "pass"), (2, 3, "like"), (3, 1, "pass")]
    small = likes.taste_model(
        np.array([1, 2, 3]), decisions(rows, known=[1, 2, 3]), AUTO, np.random.default_rng(0)
    )
    assert small.threshold == likes.ThresholdChoice(components=0, held_out=0, explained=())
    assert small.regularisation == np.inf and not small.singular_values.any()
