"""jobs.tools.evaluate, both engines: no leakage, the true model beats random, the CLI contract."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from jobs import cli, pipeline, runner
from jobs import config as config_mod
from jobs.context import Scope
from jobs.storage import bulk, schema
from jobs.storage import engine as engine_mod
from jobs.tools import evaluate, seed

ROOT = Path(__file__).resolve().parents[3]
ORACLE = ROOT / "configs" / "experiments" / "seed-oracle.yaml"
NOW = seed.DEFAULT_NOW
SENTINEL = 10.0  # the top of every rating scale: hidden ratings all at the maximum

SIGNAL_TABLES = {
    "user_quiz_vectors": ("user_id",),
    "user_interest_index": ("user_id", "interest_id"),
    "user_interest_vectors": ("user_id",),
    "profile_rating_aggregates": ("profile_id", "dimension_id"),
    "user_rating_preferences": ("user_id",),
    "user_like_behaviour": ("user_id",),
    "user_taste_vectors": ("user_id",),
}


def read_table(engine: sa.Engine, name: str, keys: tuple[str, ...]) -> pd.DataFrame:
    table = schema.metadata.tables[name]
    columns = [c for c in table.c if c.name != "updated_at"]
    with engine.connect() as conn:
        frame = bulk.read_frame(conn, sa.select(*columns))
    return frame.sort_values(list(keys)).reset_index(drop=True)


def hidden_mask(a: pd.Series, b: pd.Series, pairs: set[tuple[int, int]]) -> np.ndarray:
    """The test's own (slow, obvious) membership check, independent of compute.evaluation."""
    return np.array(
        [(min(x, y), max(x, y)) in pairs for x, y in zip(a.tolist(), b.tolist(), strict=True)],
        dtype=bool,
    )


def replace_table(engine: sa.Engine, name: str, frame: pd.DataFrame) -> None:
    with engine.begin() as conn:
        conn.execute(sa.delete(schema.metadata.tables[name]))
        bulk.insert_frame(conn, schema.metadata.tables[name], frame)


def run_signal_jobs(db, config: config_mod.Config) -> None:
    for job in pipeline.SIGNAL_JOBS:
        runner.execute(
            job,
            runner.job_function(job),
            engine=db.engine,
            database_url=db.url,
            config=config,
            scope=Scope.all(),
            clock=lambda: NOW,
        )


@pytest.fixture
def kept_scratch(db) -> Iterator[list[str]]:
    """Collects kept scratch database URLs and drops them at teardown."""
    urls: list[str] = []
    yield urls
    for url in urls:
        if url.startswith("sqlite"):
            shutil.rmtree(Path(sa.engine.make_url(url).database).parent, ignore_errors=True)
        else:
            name = sa.engine.make_url(url).database
            admin = db.engine.execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_hidden_pairs_data_never_reaches_the_signal_tables(db, default_config, kept_scratch):
    # The dense layout: its 20 cities give 300 users enough decisions to hide (the
    # realistic layout spreads so few users too thin for the counts asserted below).
    seed.seed(db.engine, n_users=300, seed=3, cities="dense")
    options = evaluate.Options(hidden_fraction=0.25, seed=11, now=NOW, keep_scratch=True)
    # Which pairs the evaluation will hide depends only on the likes (and the seed).
    parts = evaluate.split(evaluate.read_source(db.engine), options.hidden_fraction, options.seed)
    pairs = set(zip(parts.hidden_lo.tolist(), parts.hidden_hi.tolist(), strict=True))
    assert len(pairs) == round(0.25 * parts.n_decision_pairs) > 50

    # Make every hidden rating an extreme sentinel, so any leak would move the aggregates.
    source = evaluate.read_source(db.engine)
    ratings = source["ratings"].copy()
    in_hidden = hidden_mask(ratings["rater_id"], ratings["rated_id"], pairs)
    assert in_hidden.sum() > 50
    ratings.loc[in_hidden, "value"] = SENTINEL
    replace_table(db.engine, "ratings", ratings)
    likes = source["likes"]
    likes_hidden = hidden_mask(likes["user_id"], likes["target_id"], pairs)
    assert likes_hidden.sum() > 50

    result = evaluate.evaluate(
        db.engine,
        db.url,
        [evaluate.Candidate("default", "default", default_config)],
        options,
    )
    kept_scratch.append(result["scratch_database"])
    assert result["n_hidden_pairs"] == len(pairs)
    scratch = engine_mod.create_engine(result["scratch_database"])
    try:
        # No hidden decision and no hidden rating is in the scratch copy, in either direction.
        scratch_likes = read_table(scratch, "likes", ("user_id", "target_id"))
        scratch_ratings = read_table(scratch, "ratings", ("rater_id", "rated_id", "dimension_id"))
        assert not hidden_mask(scratch_likes["user_id"], scratch_likes["target_id"], pairs).any()
        assert not hidden_mask(
            scratch_ratings["rater_id"], scratch_ratings["rated_id"], pairs
        ).any()
        assert len(scratch_likes) == len(likes) - likes_hidden.sum()
        assert len(scratch_ratings) == len(ratings) - in_hidden.sum()
        scratch_signals = {
            name: read_table(scratch, name, keys) for name, keys in SIGNAL_TABLES.items()
        }
    finally:
        scratch.dispose()

    # Reference 1 (leaky): the signal jobs over everything, sentinels included.
    run_signal_jobs(db, default_config)
    leaky = read_table(db.engine, "profile_rating_aggregates", ("profile_id", "dimension_id"))
    leaky_behaviour = read_table(db.engine, "user_like_behaviour", ("user_id",))
    # Reference 2 (visible only): delete the hidden rows with the test's own mask, rerun.
    replace_table(db.engine, "likes", likes[~likes_hidden].reset_index(drop=True))
    replace_table(db.engine, "ratings", ratings[~in_hidden].reset_index(drop=True))
    run_signal_jobs(db, default_config)

    for name, keys in SIGNAL_TABLES.items():
        expected = read_table(db.engine, name, keys)
        assert len(expected) > 0, name
        pd.testing.assert_frame_equal(scratch_signals[name], expected, check_exact=True)
    # ...and the sentinels would have shown: the leaky aggregates differ from the scratch ones.
    got = scratch_signals["profile_rating_aggregates"]
    merged = got.merge(leaky, on=["profile_id", "dimension_id"], suffixes=("", "_leaky"))
    assert (merged["mean_leaky"] > merged["mean"] + 1e-9).sum() > 50
    # The likes job ran on the scratch copy too, and hidden decisions would have shown in it.
    behaviour = scratch_signals["user_like_behaviour"].merge(
        leaky_behaviour, on="user_id", suffixes=("", "_leaky")
    )
    assert (behaviour["decisions_given_leaky"] > behaviour["decisions_given"]).sum() > 50
    assert scratch_signals["user_taste_vectors"]["taste"].notna().sum() > 50


def test_true_model_config_ranks_above_random(db, default_config):
    # Dense: the thresholds below were set on its mutual likes (1,000 users in 20 cities).
    seed.seed(db.engine, n_users=1000, seed=1, cities="dense")
    oracle = config_mod.load_config([ORACLE])
    result = evaluate.evaluate(
        db.engine,
        db.url,
        [
            evaluate.Candidate("default", "default", default_config),
            evaluate.Candidate("seed-oracle", str(ORACLE), oracle),
        ],
        evaluate.Options(seed=0, now=NOW),
    )
    baselines = {b["name"]: b["metrics"] for b in result["baselines"]}
    entries = {(c["name"], c["reciprocal"]): c for c in result["configs"]}
    assert set(entries) == {(n, r) for n in ("default", "seed-oracle") for r in (True, False)}
    random_auc = baselines["random"]["auc_mutual"]
    assert abs(random_auc - 0.5) < 0.08  # random is random
    for reciprocal in (True, False):
        metrics = entries[("seed-oracle", reciprocal)]["metrics"]
        # The weights that mirror the generating model clearly beat random order and both
        # popularity baselines on hidden mutual likes, and random on one-sided likes.
        assert metrics["auc_mutual"] >= random_auc + 0.10
        assert metrics["auc_mutual"] >= baselines["rating_quality"]["auc_mutual"] + 0.05
        assert metrics["auc_mutual"] >= baselines["reciprocal_popularity"]["auc_mutual"] + 0.03
        assert metrics["auc_like"] >= baselines["random"]["auc_like"] + 0.05
        assert metrics["n_mutual_rows"] > 60
    oracle_entry = entries[("seed-oracle", True)]
    assert oracle_entry["algorithm_version"] == "v1-seed-oracle"
    assert oracle_entry["config_hash"] == oracle.content_hash
    assert "beats random by +" in oracle_entry["summary"]
    # The lead over random is clear of noise: its 95% bootstrap interval is above 0.05.
    assert oracle_entry["vs_baselines"]["random"]["ci95"][0] > 0.05
    low, high = oracle_entry["auc_mutual_ci95"]
    assert low < oracle_entry["metrics"]["auc_mutual"] < high
    roc = oracle_entry["roc"]["mutual"]
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and len(roc["fpr"]) == len(roc["tpr"])
    assert result["scratch_database"] is None


def test_evaluate_is_deterministic_given_the_seed(db, default_config):
    seed.seed(db.engine, n_users=200, seed=5)
    candidates = [evaluate.Candidate("default", "default", default_config)]

    def metrics(run_seed: int) -> list[dict]:
        result = evaluate.evaluate(
            db.engine, db.url, candidates, evaluate.Options(seed=run_seed, now=NOW)
        )
        return [c["metrics"] for c in result["configs"] + result["baselines"]]

    first = metrics(4)
    assert metrics(4) == first
    assert metrics(5) != first


def test_cli_writes_the_documented_json_and_prints_the_table(sqlite_db, tmp_path, capsys):
    seed.seed(sqlite_db.engine, n_users=200, seed=2)
    out = tmp_path / "reports" / "evaluation.json"
    argv = ["--db", sqlite_db.url, "evaluate", "--candidate", str(ORACLE), "--out", str(out)]
    assert cli.main([*argv, "--now", "2026-11-01T00:00Z"]) == 0
    printed = capsys.readouterr().out
    assert "[baseline] reciprocal_popularity" in printed
    assert "seed-oracle (reciprocal on): mutual-match AUC" in printed
    written = json.loads(out.read_text())
    assert set(written) >= {
        "created_at",
        "database",
        "hidden_fraction",
        "seed",
        "n_hidden_pairs",
        "configs",
        "baselines",
    }
    assert [c["name"] for c in written["configs"]] == ["default"] * 2 + ["seed-oracle"] * 2
    for entry in written["configs"]:
        assert set(entry) >= {
            "name",
            "algorithm_version",
            "config_hash",
            "reciprocal",
            "metrics",
            "roc",
        }
        assert set(entry["roc"]["mutual"]) == {"fpr", "tpr"}
    assert [b["name"] for b in written["baselines"]] == [
        "random",
        "rating_quality",
        "like_rates",
        "reciprocal_popularity",
    ]
    assert "[baseline] like_rates" in printed
    for entry in written["configs"] + written["baselines"]:
        metrics = entry["metrics"]
        assert 0.0 <= metrics["viewer_auc_like"] <= 1.0
        assert 0.0 <= metrics["viewer_ndcg_at_k_like"] <= 1.0
        assert 0 < metrics["n_viewers_both_like"] <= metrics["n_viewers_like"]

    assert cli.main([*argv, "--json", "--no-default"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in as_json["configs"]] == ["seed-oracle"] * 2

    bad = tmp_path / "bad.yaml"
    bad.write_text("weights:\n  quiz: -1\n")
    assert cli.main(["--db", sqlite_db.url, "evaluate", "--candidate", str(bad)]) == 1
    assert "weights.quiz" in capsys.readouterr().err
    clash = ["--now", "2026-11-01T00:00Z", "--as-of", "2026-11-02T00:00Z"]
    assert cli.main(["--db", sqlite_db.url, "evaluate", *clash]) == 1
    assert "disagree" in capsys.readouterr().err


def test_postgres_scratch_database_is_dropped(pg_db, default_config):
    seed.seed(pg_db.engine, n_users=120, seed=8)

    def scratch_names() -> set[str]:
        with pg_db.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT datname FROM pg_database WHERE datname LIKE 'matchjobs_eval_%%'"
            ).all()
        return {row[0] for row in rows}

    before = scratch_names()
    evaluate.evaluate(
        pg_db.engine,
        pg_db.url,
        [evaluate.Candidate("default", "default", default_config)],
        evaluate.Options(now=NOW),
    )
    assert scratch_names() <= before


def test_summary_says_plainly_when_a_config_does_not_beat_a_baseline():
    versus = {
        "random": {"diff": 0.2, "ci95": [0.1, 0.3]},
        "rating_quality": {"diff": 0.02, "ci95": [-0.01, 0.05]},
        "reciprocal_popularity": {"diff": -0.1, "ci95": [-0.2, -0.01]},
    }
    text = evaluate.summary_sentence("quiz-heavy", False, 0.61, versus)
    assert text == (
        "quiz-heavy (reciprocal off): mutual-match AUC 0.610; "
        "beats random by +0.200 (95% CI +0.100 to +0.300); "
        "leads rating_quality by +0.020 (95% CI -0.010 to +0.050), but within noise; "
        "does NOT beat reciprocal_popularity -0.100 (95% CI -0.200 to -0.010)."
    )
