"""The HTML report: every plot embedded and decodable, SQL aggregates equal to Python's."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from jobs import cli
from jobs.storage import api, bulk, schema
from jobs.storage import scores as scores_store
from jobs.tools import report, report_data, report_plots

NOW = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.UTC)
PASSWORD = "s3cret-Pa55"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
IMG = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
TITLES = [s.title for s in report.SECTIONS]


def _ts(values: list[dt.datetime] | pd.Series) -> pd.Series:
    return pd.Series(pd.to_datetime(list(values), utc=True), dtype="datetime64[us, UTC]")


def insert(db, table, frame: pd.DataFrame) -> None:
    with db.engine.begin() as conn:
        bulk.insert_frame(conn, table, frame)


def insert_scores(db, frame: pd.DataFrame) -> None:
    """Rows of :func:`score_frame` (each with its own computed_at), reasons as patterns."""
    patterns = scores_store.reason_patterns(frame["reasons"])
    rows = frame.drop(columns="reasons").assign(reason_id=patterns.row_ids)
    with db.engine.begin() as conn:
        bulk.insert_frame(conn, schema.match_scores, rows)
        scores_store.store_patterns(conn, patterns)


def add_users(db, ids: list[int], active: list[bool] | None = None) -> None:
    insert(
        db,
        schema.users,
        pd.DataFrame(
            {
                "id": ids,
                "seeking_mask": 3,
                "created_at": _ts([NOW - dt.timedelta(days=60)] * len(ids)),
                "is_active": active if active is not None else [True] * len(ids),
            }
        ),
    )


def scorer_values(values: np.ndarray) -> np.ndarray:
    """What the scorer writes: float32 values (widened), as match_scores stores them."""
    return np.asarray(values, dtype=np.float32).astype(np.float64)


def score_frame(
    version: str, user_ids: np.ndarray, candidate_ids: np.ndarray, scores: np.ndarray, **kw
) -> pd.DataFrame:
    n = len(scores)
    computed = kw.get("computed_at", [NOW - dt.timedelta(hours=5)] * n)
    return pd.DataFrame(
        {
            "algorithm_version": version,
            "user_id": user_ids,
            "candidate_id": candidate_ids,
            "score": scorer_values(scores),
            **{
                f"s_{name}": scorer_values(kw.get(name, np.full(n, 0.5)))
                for name in schema.SUBSCORE_COLUMNS
            },
            "reasons": "[]",
            "computed_at": _ts(computed),
        }
    )


def add_signal_update(db, user_id: int, updated_at: dt.datetime) -> None:
    insert(
        db,
        schema.user_quiz_vectors,
        pd.DataFrame(
            {
                "user_id": [user_id],
                "dim": [4],
                "vector": [np.zeros(4, np.float32).tobytes()],
                "n_answers": [10],
                "updated_at": _ts([updated_at]),
            }
        ),
    )


def run_rows(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["started_at"] = _ts(frame["started_at"])
    frame["finished_at"] = _ts(
        frame["started_at"] + pd.to_timedelta(frame["duration_ms"], unit="ms")
    )
    frame["heartbeat_at"] = frame["finished_at"]
    frame["metadata"] = frame["metadata"].map(lambda m: json.dumps(m, sort_keys=True))
    return frame.assign(algorithm_version="v1", config_hash="0123456789abcdef", attempt=1)


MATCH_METADATA = {
    "funnel": {
        "users": 400,
        "candidates_per_source": {"quiz": 61000, "interest": 58000, "fallback": 1200},
        "removed_per_filter": {"gender": 9000, "age": 7400, "distance": 5100, "liked": 800},
        "scored": 98000,
        "kept": 8000,
        "users_without_candidates": 3,
        "rows_written": 8000,
        "rows_deleted": 7900,
        "compute_s": {"candidates": 1.9, "signals": 0.8, "scoring": 0.3},
    },
    "phases_s": {"load": 0.7, "compute": 3.0, "write": 1.1},
    "skipped": {"no_location": 4, "nan_vector": 1},
    "rows_written": 8000,
    "algorithm_version": "v1",
    "exposure": {
        "over": "all_lists",
        "users": 400,
        "never_suggested_share": 0.125,
        "appearances_p50": 19.0,
        "appearances_p99": 61.0,
        "appearances_max": 73,
        "appearances_mean": 20.0,
        "gini": 0.31,
    },
}


def realistic(db, rng: np.random.Generator) -> None:
    """400 users, two versions of 20 suggestions each, three weeks of runs."""
    n_users, k = 400, 20
    ids = list(range(1, n_users + 1))
    add_users(db, ids, active=[i % 25 != 0 for i in ids])
    for version, shift in (("v1", 0.0), ("v2", 0.06)):
        have = np.array([u for u in ids if u % 9 != 0])  # some users have no set
        user_ids = np.repeat(have, k)
        candidate_ids = (user_ids + np.tile(np.arange(1, k + 1), have.size)) % n_users + 1
        sub = {
            "quiz": rng.beta(5, 3, user_ids.size),
            "interests": rng.beta(2, 4, user_ids.size),
            "rating_quality": rng.beta(4, 4, user_ids.size),
            "rating_fit": rng.beta(3, 3, user_ids.size),
            "newness": rng.beta(1.5, 5, user_ids.size),
            "proximity": rng.beta(4, 2, user_ids.size),
        }
        weights = np.array([0.25, 0.2, 0.15, 0.1, 0.1, 0.2])
        scores = np.clip(sum(w * sub[n] for w, n in zip(weights, sub, strict=True)) + shift, 0, 1)
        ages_h = np.repeat(rng.gamma(2.0, 10.0, have.size), k)
        computed = [NOW - dt.timedelta(hours=float(h)) for h in ages_h]
        frame = score_frame(version, user_ids, candidate_ids, scores, computed_at=computed, **sub)
        insert_scores(db, frame)
    for user_id in ids[::7]:
        add_signal_update(db, user_id, NOW - dt.timedelta(minutes=30))
    rows = []
    for day in range(21):
        night = NOW - dt.timedelta(days=21 - day, hours=4)
        for offset, (job, base_ms) in enumerate(
            (("quiz", 4000), ("interests", 6000), ("ratings", 9000), ("match", 60000))
        ):
            failed = job == "ratings" and day == 12
            rows.append(
                {
                    "job_name": job,
                    "status": "failed" if failed else "succeeded",
                    "trigger": "nightly",
                    "scope": "all",
                    "started_at": night + dt.timedelta(minutes=5 * offset),
                    "duration_ms": int(base_ms * (1 + day / 40) * rng.uniform(0.9, 1.1)),
                    "error": "StorageError: ratings write failed" if failed else None,
                    "metadata": MATCH_METADATA if job == "match" else {},
                }
            )
        for _ in range(3):
            rows.append(
                {
                    "job_name": "match",
                    "status": "succeeded",
                    "trigger": "event",
                    "scope": f"user:{int(rng.integers(1, n_users))}",
                    "started_at": night + dt.timedelta(hours=float(rng.uniform(2, 20))),
                    "duration_ms": int(rng.uniform(150, 400)),
                    "error": None,
                    "metadata": {"funnel": {"users": 1, "kept": 20}},
                }
            )
    insert(db, schema.job_runs, run_rows(rows))


def evaluation_json(path: Path, rng: np.random.Generator) -> Path:
    """An evaluation file in the shape ``matchjobs evaluate`` writes."""

    def roc(separation: float) -> dict[str, list[float]]:
        fpr = np.linspace(0, 1, 101)
        tpr = 1 - (1 - fpr) ** (1 + separation)
        return {"fpr": fpr.round(4).tolist(), "tpr": tpr.round(4).tolist()}

    def entry(name: str, separation: float, **extra) -> dict:
        auc = 1 - 1 / (2 + separation)
        return {
            "name": name,
            "metrics": {"auc_mutual": auc, "precision_at_k_mutual": 0.1 * separation, "k": 20},
            "roc": {"mutual": roc(separation), "like": roc(separation / 2)},
            **extra,
        }

    data = {
        "created_at": "2026-11-19T22:00:00+00:00",
        "database": f"postgresql://scientist:{PASSWORD}@db.internal/matches",
        "hidden_fraction": 0.2,
        "seed": 7,
        "n_hidden_pairs": 5120,
        "configs": [
            entry(
                "default",
                2.0,
                algorithm_version="v1",
                config_hash="a" * 16,
                reciprocal=True,
                summary="default (reciprocal on) beats every baseline.",
            ),
            entry("default", 1.5, algorithm_version="v1", config_hash="a" * 16, reciprocal=False),
        ],
        "baselines": [entry("random", 0.0), entry("popularity", 0.6)],
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write(db, tmp_path: Path, evaluation: Path | None = None, url: str | None = None) -> str:
    from jobs import config as config_mod

    summary = report.write_report(
        db.engine,
        database_url=url or db.url,
        config=config_mod.load_config(),
        out_dir=tmp_path / "out",
        now=NOW,
        evaluation_path=evaluation or tmp_path / "absent.json",
    )
    return Path(summary["path"]).read_text(encoding="utf-8")


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in IMG.findall(page)]


# ---------------------------------------------------------------------------------- tests


def test_report_embeds_every_plot_as_a_png_and_hides_the_password(db, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    realistic(db, rng)
    evaluation = evaluation_json(tmp_path / "evaluation.json", rng)
    secret_url = f"postgresql://ops:{PASSWORD}@db.internal:5432/matchjobs"
    page = write(db, tmp_path, evaluation, url=secret_url)
    pngs = embedded_pngs(page)
    assert len(pngs) == len(report.SECTIONS)
    for png in pngs:
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    for title in TITLES:
        assert f"<h2>{title}</h2>" in page
    assert PASSWORD not in page
    assert "ops:***@db.internal" in page and "scientist:***@db.internal" in page
    assert "no evaluation yet" not in page
    assert "default (reciprocal on) beats every baseline." in page
    assert "auc mutual" in page and "popularity" in page
    assert "v1 (7,120 rows)" in page and "v2 (7,120 rows)" in page  # 356 users × 20
    # The match run's exposure spread (issue 11, item 7).
    assert "<h3>Exposure</h3>" in page and "12.5%" in page and "19 / 61 / 73" in page


def test_without_an_evaluation_file_the_page_says_so(db, tmp_path: Path) -> None:
    realistic(db, np.random.default_rng(2))
    page = write(db, tmp_path)
    assert "no evaluation yet" in page
    assert len(embedded_pngs(page)) == len(report.SECTIONS) - 1
    assert all(f"<h2>{title}</h2>" in page for title in TITLES)


def test_an_empty_database_renders_with_plain_notes(db, tmp_path: Path) -> None:
    bad = tmp_path / "evaluation.json"
    bad.write_text('{"configs": [{"name": "x", "roc": {"mutual": {"fpr": [0]}}}]}')
    page = write(db, tmp_path, evaluation=bad)
    assert embedded_pngs(page) == []
    assert "No scores yet" in page and "No runs recorded yet" in page
    assert "The evaluation file has no ROC curves." in page
    bad.write_text("{not json")
    assert "could not be read" in write(db, tmp_path, evaluation=bad)


def test_histogram_counts_from_sql_equal_python_counts(db) -> None:
    rng = np.random.default_rng(3)
    # Values on and next to bucket edges, where floor and round (or float error) disagree.
    edges = np.array([0.0, 0.019, 0.02, 0.14, 0.29, 0.5, 0.58, 0.981, 0.999, 1.0])
    scores = {"edges": edges, "a": np.r_[edges, rng.random(500)], "b": rng.beta(5, 2, 300)}
    for version, values in scores.items():
        n = values.size
        quiz = rng.random(n)
        frame = score_frame(version, np.arange(n), np.arange(n) + 1, values, quiz=quiz)
        insert_scores(db, frame)
        scores[version] = (scorer_values(values), scorer_values(quiz))
    with db.engine.connect() as conn:
        buckets = api.score_buckets(conn, report_data.BINS)
    hist = report_data.score_histogram(buckets)
    means = report_data.contributions(buckets, {n: 1.0 for n in schema.SUBSCORE_COLUMNS})
    for version, (values, quiz) in scores.items():
        expected = np.bincount(
            np.minimum(np.floor(values * report_data.BINS), report_data.BINS - 1).astype(int),
            minlength=report_data.BINS,
        )
        assert hist[version].tolist() == expected.tolist()
        assert means.loc[version, "quiz"] == pytest.approx(quiz.mean())
        assert means.loc[version, "mean_score"] == pytest.approx(values.mean())
    # and by hand: 0.58 * 50 = 28.999…, which PostgreSQL's CAST would round to 29; the
    # scorer's float32 0.02 is 0.0199999995…, so it counts in bucket 0
    edge_counts = hist["edges"]
    assert edge_counts[edge_counts > 0].to_dict() == {0: 3, 7: 1, 14: 1, 25: 1, 28: 1, 49: 3}


def test_freshness_counts_fresh_outdated_and_missing_sets(db) -> None:
    add_users(db, [1, 2, 3, 4], active=[True, True, True, False])
    computed = NOW - dt.timedelta(hours=10)
    frame = score_frame(
        "v1",
        np.array([1, 2, 4]),
        np.array([2, 1, 1]),
        np.full(3, 0.5),
        computed_at=[computed] * 3,
    )
    insert_scores(db, frame)
    add_signal_update(db, 1, computed - dt.timedelta(hours=1))  # older than the set: fresh
    add_signal_update(db, 2, computed + dt.timedelta(hours=1))  # newer: outdated
    with db.engine.connect() as conn:
        summary = report_data.freshness_summary(api.set_freshness(conn, "v1"), NOW)
    assert summary["active_users"] == 3  # user 4 is inactive
    assert (summary["fresh"], summary["outdated"], summary["no_set"]) == (1, 1, 1)
    assert summary["oldest_hours"] == pytest.approx(10.0)


def test_funnel_comes_from_the_newest_succeeded_whole_population_match_run(db) -> None:
    base = {"trigger": "nightly", "error": None, "duration_ms": 1000}
    insert(
        db,
        schema.job_runs,
        run_rows(
            [
                {
                    **base,
                    "job_name": "match",
                    "status": "succeeded",
                    "scope": "all",
                    "started_at": NOW - dt.timedelta(days=2),
                    "metadata": {"funnel": {"kept": 1}},
                },
                {
                    **base,
                    "job_name": "match",
                    "status": "succeeded",
                    "scope": "all",
                    "started_at": NOW - dt.timedelta(days=1),
                    "metadata": MATCH_METADATA,
                },
                {
                    **base,
                    "job_name": "match",
                    "status": "failed",
                    "scope": "all",
                    "started_at": NOW - dt.timedelta(hours=2),
                    "metadata": {"funnel": {"kept": 2}},
                },
                {
                    **base,
                    "job_name": "match",
                    "status": "succeeded",
                    "scope": "user:3",
                    "started_at": NOW - dt.timedelta(hours=1),
                    "metadata": {"funnel": {"kept": 3}},
                },
            ]
        ),
    )
    with db.engine.connect() as conn:
        run = api.latest_run(conn, "match")
    assert run is not None and json.loads(run["metadata"]) == MATCH_METADATA
    panels = {title: values for title, _, values in report_data.funnel_panels(MATCH_METADATA)}
    assert panels["funnel"]["kept"] == 8000
    assert panels["removed per filter"] == {
        "gender": 9000,
        "age": 7400,
        "distance": 5100,
        "liked": 800,
    }
    assert panels["skipped"] == {"no location": 4, "nan vector": 1}
    assert report_data.funnel_panels({"funnel": "n/a", "x": True, "rows": 5}) == [
        ("run totals", "count", {"rows": 5})
    ]


def test_cli_report_writes_the_page_and_prints_its_path(
    db, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    realistic(db, np.random.default_rng(4))
    out = tmp_path / "site"
    code = cli.main(
        [
            "--db",
            db.url,
            "report",
            "--out",
            str(out),
            "--evaluation",
            str(tmp_path / "no.json"),
            "--json",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(out / "report.html") and (out / "report.html").exists()
    assert summary["missing"] == ["evaluation"] and summary["evaluation"] is False
    assert summary["versions"] == ["v1", "v2"]


def test_funnel_users_and_pairs_get_separate_panels() -> None:
    """Regression: the funnel panel drew ~200k pairs and ~2.7k users on one axis, so the
    user bars were invisible."""
    panels = report_plots.split_users_from_pairs(report_data.funnel_panels(MATCH_METADATA))
    by_title = {title: (unit, values) for title, unit, values in panels}
    assert by_title["funnel: users"] == ("users", {"users": 400, "users without candidates": 3})
    unit, pairs = by_title["funnel: pairs and rows"]
    assert unit == "pairs / rows" and "users" not in pairs and pairs["kept"] == 8000
    # Panels without users stay whole.
    assert by_title["removed per filter"][1]["age"] == 7400
