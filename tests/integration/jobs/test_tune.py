"""jobs.tools.tune, both engines: known weights are recovered, too few pairs refuse, the YAML
is a valid experiment config, and the CLI contract."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from scipy import special

from compute import ratings, signals
from jobs import cli
from jobs import config as config_mod
from jobs.errors import TooFewPairsError
from jobs.tools import scratch, seed, tune

NOW = seed.DEFAULT_NOW
# The generating model: a logistic of these weights of the registry's signal values.
TRUE_WEIGHTS = {"quiz": 0.5, "interest": 0.3, "newness": 0.2}
SCALE = 10.0
# Tolerance on each normalised fitted weight (absolute): ~4,500 fitted rows.
TOLERANCE = 0.1


def known_weight_population(
    db,
    n_users: int,
    candidates_per_user: int,
    rng_seed: int,
    true_weights: dict[str, float] = TRUE_WEIGHTS,
    quality_dimension: int | None = None,
) -> None:
    """Seeded profiles (quiz, interests, ratings), with likes drawn from ``true_weights``.

    The seeder's own likes are dropped; the signals are computed by the production jobs and
    the registry (``signals.compute_signals``) on the database itself. With
    ``quality_dimension``, the rating_quality the likes are drawn from is that rating
    dimension's alone (column ``d`` of the centred standings).
    """
    config = config_mod.load_config()
    frames = seed.generate(n_users, rng_seed, NOW)
    frames["likes"] = frames["likes"].iloc[0:0]
    with db.engine.begin() as conn:
        seed.write(conn, frames)
    scratch.run_signal_jobs(db.engine, db.url, config, NOW)
    pop = scratch.load_population(db.engine, config, NOW)
    rng = np.random.default_rng(rng_seed)
    n = pop.n_users
    a = np.repeat(np.arange(n), candidates_per_user)
    b = (a + rng.integers(1, n, size=a.size)) % n  # never a itself
    lo, hi = np.unique(np.column_stack([np.minimum(a, b), np.maximum(a, b)]), axis=0).T
    viewers, cands = np.concatenate([lo, hi]), np.concatenate([hi, lo])
    values = signals.compute_signals(pop, viewers, cands).values
    values = np.where(np.isnan(values), signals.neutral_values(0.5), values)
    if quality_dimension is not None:
        d = pop.rating_dims.shape[1]
        alone = ratings.reweighted_quality(
            pop.rating_quality[cands],
            pop.rating_dims[cands],
            np.full(d, 1 / d),
            np.eye(d)[quality_dimension],
        )
        q = signals.index("rating_quality")
        values[:, q] = np.where(pop.has_rating_quality[cands], alone, 0.5)
    true = np.array([true_weights.get(name, 0.0) for name in signals.SIGNAL_NAMES])
    mixed = values @ true
    liked = rng.random(mixed.size) < special.expit(SCALE * (mixed - np.median(mixed)))
    likes = pd.DataFrame(
        {
            "user_id": pop.user_ids[viewers],
            "target_id": pop.user_ids[cands],
            "kind": np.where(liked, "like", "pass"),
            "created_at": pd.Timestamp(NOW) - pd.Timedelta(days=1),
        }
    )
    with db.engine.begin() as conn:
        seed.write(conn, {"likes": likes})


def test_tune_recovers_known_weights_and_writes_a_valid_experiment(db, tmp_path):
    known_weight_population(db, n_users=300, candidates_per_user=20, rng_seed=7)
    out = tmp_path / "tuned.yaml"
    outcome = tune.tune(
        db.engine,
        db.url,
        [],
        out,
        tune.Options(seed=0, now=NOW, folds=3, bootstrap=20),
        command="matchjobs tune (test)",
    )
    fitted = outcome.config.weights.by_signal()
    total = sum(fitted.values())
    for name in signals.SIGNAL_NAMES:
        assert fitted[name] / total == pytest.approx(TRUE_WEIGHTS.get(name, 0.0), abs=TOLERANCE), (
            name,
            fitted,
        )
    # The file loads as an experiment merged over the default, with every registry key.
    loaded = config_mod.load_config([out])
    assert loaded == outcome.config
    assert loaded.algorithm_version == tune.DEFAULT_VERSION
    raw = yaml.safe_load(out.read_text())
    assert set(raw) == {"algorithm_version", "weights", "scoring"}
    assert set(raw["weights"]) == set(signals.SIGNAL_KEYS)
    header = " ".join(
        line.lstrip("#").strip() for line in out.read_text().splitlines() if line.startswith("#")
    )
    assert "Command: matchjobs tune (test)" in header
    assert "hidden fraction 0.2, seed 0" in header and "Held-out" in header
    # The held-out pairs are evaluate's with the same seed, and none was fitted on.
    facts = outcome.facts
    assert facts["n_hidden_pairs"] == outcome.evaluation["n_hidden_pairs"]
    assert facts["n_visible_pairs"] + facts["n_hidden_pairs"] == facts["n_decision_pairs"]
    assert facts["n_train_pairs"] + facts["n_validation_pairs"] <= facts["n_visible_pairs"]
    entries = {(c["name"], c["served"]): c for c in outcome.evaluation["configs"]}
    tuned = entries[("tuned", True)]["metrics"]
    default = entries[("default", True)]["metrics"]
    # The generating model's weights beat the default on held-out likes.
    assert tuned["auc_like"] > default["auc_like"] + 0.02


def test_tune_recovers_which_rating_dimension_the_likes_follow(db, tmp_path):
    """Likes drawn from one rating dimension's standing: the fit splits rating_quality by
    dimension, puts the weight on that one and writes it as ratings.dimension_weights,
    which the served config then scores with."""
    truth = {"rating_quality": 0.8, "quiz": 0.2}
    known_weight_population(db, 300, 20, 11, true_weights=truth, quality_dimension=1)
    out = tmp_path / "tuned.yaml"
    outcome = tune.tune(
        db.engine, db.url, [], out, tune.Options(seed=0, now=NOW, folds=3, bootstrap=0), command="t"
    )
    with db.engine.connect() as conn:
        names = (
            conn.execute(sa.text("SELECT name FROM rating_dimensions ORDER BY id")).scalars().all()
        )
    fitted = outcome.config.ratings.dimension_weights
    assert set(fitted) <= set(names)
    # The seed's dimensions are correlated (one latent standing each) and ~300 users rated:
    # the true dimension leads by far, the others share what their correlation explains.
    assert max(fitted, key=fitted.get) == names[1], fitted
    assert fitted[names[1]] / sum(fitted.values()) > 0.4, fitted
    weights = outcome.config.weights.by_signal()
    assert weights["rating_quality"] / sum(weights.values()) == pytest.approx(0.8, abs=TOLERANCE)
    raw = yaml.safe_load(out.read_text())
    assert raw["ratings"]["dimension_weights"] == fitted
    assert "rating_quality's coefficient is the sum of its dimensions'" in out.read_text()


def test_too_few_decided_pairs_refuse_with_a_clear_error(db, tmp_path):
    seed.seed(db.engine, n_users=30, seed=1)
    out = tmp_path / "tuned.yaml"
    with pytest.raises(TooFewPairsError, match="too few decided pairs to tune: visible"):
        tune.tune(db.engine, db.url, [], out, tune.Options(now=NOW), command="test")
    assert not out.exists()


def test_cli_prints_one_line_on_too_few_pairs_and_the_table_otherwise(sqlite_db, tmp_path, capsys):
    seed.seed(sqlite_db.engine, n_users=200, seed=1)
    out = tmp_path / "tuned.yaml"
    argv = ["--db", sqlite_db.url, "tune", "--as-of", "2026-11-01T00:00Z", "--out", str(out)]
    assert cli.main([*argv, "--min-pairs", "1000000"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("matchjobs: error: TooFewPairsError: too few")

    small = ["--bootstrap", "10", "--folds", "2", "--note", "tiny"]
    assert cli.main([*argv, *small]) == 0
    printed = capsys.readouterr().out
    assert "[baseline] reciprocal_popularity" in printed and "tuned, reciprocal" in printed
    text = out.read_text()
    assert "# Command: matchjobs --db sqlite:///" in text and "--min-pairs 200" in text
    assert "# Note: tiny" in text
    assert config_mod.load_config([out]).algorithm_version == tune.DEFAULT_VERSION
