"""Offline evaluation: score candidate configs against observed decisions, with no leakage.

Scope: the whole source database, read-only. Writes no table of it: the signal tables are
rebuilt in a *scratch* database (an SQLite file for an SQLite source, a new database on the
same server for PostgreSQL, or ``scratch_url``), dropped afterwards unless kept.

The method (see ``compute.evaluation`` for the metrics):

1. Read the source tables. The unordered pairs {u, v} with at least one like or pass are
   the decision pairs; a seeded ``hidden_fraction`` of them is hidden.
2. Copy every source row into the scratch database *except* the hidden pairs' ratings and
   likes/passes/blocks, in both directions. Quiz answers and interests are per user, not
   per pair, and are copied whole.
3. Run the production signal jobs (quiz, interests, ratings, likes) on the scratch copy through
   ``runner.execute``, once per distinct set of signal settings among the configs. No
   hidden pair's data can reach a signal table because it is not in the database they read.
4. Load the population as the match job does (``jobs.storage.population.load`` with the
   match job's own ``settings_from_config``, then ``clean_population``), and score every
   hidden pair in both directions with ``compute.scoring.score_pairs``, each config once with
   reciprocal fusion on (its configured ``combine``) and once off. The exposure cap is
   switched off: it depends on whole top-K lists, which hidden pairs alone are not. Pairs
   one of whose users is not in the population (inactive, or dropped as invalid) cannot be
   shown by the product and are left out of every scorer alike (counted).
5. Baselines on the same rows (``BASELINE_DESCRIPTIONS``): random order (seeded);
   ``rating_quality`` alone (the production scorer with every other weight at 0,
   one-directional; called "popularity" before issue 11); and from the *visible* decisions
   only (``compute.evaluation.reciprocal_popularity``) the one-sided ``like_rates``
   (a.given × b.received) and ``reciprocal_popularity`` (its harmonic mean both ways).

The result is a JSON-ready dict (:data:`RESULT_SCHEMA` documents it) that the CLI prints
and writes to ``--out``; the HTML report reads the same file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from compute import evaluation, ranking_metrics, scoring
from compute.population import Population
from jobs import runner
from jobs.config import Config
from jobs.errors import ConfigError, InputDataError
from jobs.match import core as match
from jobs.storage import engine as engine_mod
from jobs.storage import schema
from jobs.storage import signals as signal_store
from jobs.tools import scratch

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_K = 3
DEFAULT_BOOTSTRAP = 200

RESULT_SCHEMA = """\
{
  "schema_version": 1,
  "created_at": ISO 8601 UTC time of the evaluation,
  "database": source database URL, password redacted,
  "now": the reference time signals were computed at (ISO 8601),
  "hidden_fraction": float, "seed": int, "k": int,
  "n_decision_pairs": unordered pairs with at least one like or pass,
  "n_hidden_pairs": pairs hidden (round(hidden_fraction * n_decision_pairs)),
  "n_evaluated_pairs": hidden pairs whose two users are both in the scored population,
  "n_rows": directed rows evaluated (2 per evaluated pair),
  "scratch_database": URL of the kept scratch database, or null when it was dropped,
  "configs": [{
    "name": str, "source": YAML file or "default",
    "algorithm_version": str, "config_hash": str (16 hex),
    "reciprocal": bool (fusion on for this entry; every config appears with both),
    "served": bool (this entry's reciprocal setting is the config's own),
    "fusion": "harmonic" | "geometric" | "min" | null,
    "metrics": METRICS,
    "auc_mutual_ci95": [low, high] (paired bootstrap over pairs) or null,
    "roc": {"mutual": {"fpr": [...], "tpr": [...]}, "like": {"fpr": [...], "tpr": [...]}},
    "vs_baselines": {baseline name: {"diff": auc_mutual (config − baseline),
                                     "ci95": [low, high] of that difference or null}},
    "summary": one plain sentence
  }],
  "baselines": [{"name", "description", "metrics": METRICS, "auc_mutual_ci95", "roc"}],
  "notes": [str]
}
METRICS = {
  "auc_mutual": AUC of the row score for a mutual like, over all rows,
  "auc_like": AUC of the row score for "viewer liked candidate", over rows with a decision,
  "precision_at_k_mutual", "recall_at_k_mutual", "ndcg_at_k_mutual": per viewer, relevance
      = mutual like, averaged over viewers with one,
  "precision_at_k_like", "recall_at_k_like", "ndcg_at_k_like": the same, relevance = liked,
      over rows with a decision,
  "k", "n_rows", "n_mutual_rows", "n_decided_rows", "n_like_rows",
  "n_viewers_mutual", "n_viewers_like",
  "viewer_auc_mutual", "viewer_ndcg_at_k_mutual": within each viewer's rows (relevance =
      mutual like), averaged over viewers with at least one mutual and one other row,
  "n_viewers_both_mutual": those viewers,
  "viewer_auc_like", "viewer_ndcg_at_k_like", "n_viewers_both_like": the same over rows
      with a decision, relevance = liked (viewers with a like and a pass)
}
Baseline names: "random", "rating_quality" (named "popularity" before issue 11),
"like_rates", "reciprocal_popularity".
NaN metrics (a class with no rows) are written as null.
"""

BASELINE_DESCRIPTIONS: dict[str, str] = {
    "random": "random order (seeded)",
    "rating_quality": "the candidate's rating quality alone (one direction)",
    "like_rates": "one-sided: the viewer's like rate given × the candidate's like rate "
    "received, over visible decisions",
    "reciprocal_popularity": "harmonic mean over both directions of the viewer's like rate "
    "× the candidate's received-like rate, over visible decisions",
}
BASELINE_NAMES = tuple(BASELINE_DESCRIPTIONS)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One config to evaluate: a display name, where it came from, and the validated config."""

    name: str
    source: str
    config: Config


@dataclasses.dataclass(frozen=True)
class Options:
    """How to evaluate.

    Attributes
    ----------
    hidden_fraction : float in (0, 1)
    seed : int
        Seeds the hidden sample and the random baseline.
    k : int ≥ 1
        Cut-off of precision, recall and NDCG.
    now : datetime or None
        Reference time for the signal jobs and the population (ages, newness); None = the
        latest ``last_active_at``/``created_at`` of the source users.
    scratch_url : str or None
        An existing database to build the scratch copy in (migrated first), so that a role
        without CREATEDB can evaluate; None = create one. It must be empty, unless
        ``reset_scratch``; it must not be the source database.
    reset_scratch : bool
        Delete every row of ``scratch_url``'s tables first (a scratch reused run after run).
    keep_scratch : bool
        Keep the scratch database afterwards (its URL is logged and returned).
    bootstrap : int ≥ 0
        Resamples of the pairs for the 95% intervals of mutual-match AUC and of each
        config's lead over each baseline; 0 = no intervals.
    """

    hidden_fraction: float = 0.2
    seed: int = 0
    k: int = DEFAULT_K
    now: dt.datetime | None = None
    scratch_url: str | None = None
    reset_scratch: bool = False
    keep_scratch: bool = False
    bootstrap: int = DEFAULT_BOOTSTRAP

    def __post_init__(self) -> None:
        if not 0.0 < self.hidden_fraction < 1.0:
            raise ConfigError(
                f"hidden fraction must be in (0, 1) (exclusive); got {self.hidden_fraction}"
            )
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be ≥ 0; got {self.bootstrap}")
        if self.k < 1:
            raise ConfigError(f"k must be at least 1; got {self.k}")
        if self.reset_scratch and self.scratch_url is None:
            raise ConfigError("reset_scratch needs a scratch database URL (--scratch-db URL)")
        if self.now is not None and self.now.tzinfo is None:
            raise ConfigError(f"now must be timezone-aware (UTC); got {self.now!r}")


# ------------------------------------------------------------------------------ hiding


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """The source rows, the hidden pairs, and the visible frames to copy."""

    frames: dict[str, pd.DataFrame]
    visible: dict[str, pd.DataFrame]
    n_decision_pairs: int
    hidden_lo: npt.NDArray[np.int64]
    hidden_hi: npt.NDArray[np.int64]


def read_source(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    """Every source table as a frame, read in one transaction."""
    with engine.connect() as conn, conn.begin():
        return {t.name: signal_store.read(conn, t) for t in schema.SOURCE_TABLES}


def split(frames: dict[str, pd.DataFrame], hidden_fraction: float, seed: int) -> Split:
    """Pick the hidden pairs and drop their ratings and decisions (both directions)."""
    likes = frames["likes"]
    user_ids = likes["user_id"].to_numpy(dtype=np.int64)
    target_ids = likes["target_id"].to_numpy(dtype=np.int64)
    kinds = likes["kind"].astype(str).to_numpy()
    lo, hi = evaluation.decision_pairs(user_ids, target_ids, np.isin(kinds, ["like", "pass"]))
    if lo.size == 0:
        raise InputDataError("the likes table holds no like or pass: nothing to evaluate against")
    picked = evaluation.sample_hidden(lo.size, hidden_fraction, np.random.default_rng(seed))
    hidden_lo, hidden_hi = lo[picked], hi[picked]
    return Split(frames, hide(frames, hidden_lo, hidden_hi), int(lo.size), hidden_lo, hidden_hi)


def hide(
    frames: dict[str, pd.DataFrame],
    hidden_lo: npt.NDArray[np.int64],
    hidden_hi: npt.NDArray[np.int64],
) -> dict[str, pd.DataFrame]:
    """The frames without the pairs' ratings and likes/passes/blocks (both directions)."""
    likes, ratings = frames["likes"], frames["ratings"]
    hidden_likes = evaluation.in_pairs(
        likes["user_id"].to_numpy(dtype=np.int64),
        likes["target_id"].to_numpy(dtype=np.int64),
        hidden_lo,
        hidden_hi,
    )
    hidden_ratings = evaluation.in_pairs(
        ratings["rater_id"].to_numpy(dtype=np.int64),
        ratings["rated_id"].to_numpy(dtype=np.int64),
        hidden_lo,
        hidden_hi,
    )
    visible = dict(frames)
    visible["likes"] = likes[~hidden_likes].reset_index(drop=True)
    visible["ratings"] = ratings[~hidden_ratings].reset_index(drop=True)
    logger.info(
        "hiding %d decision pairs: %d likes/passes/blocks and %d ratings",
        hidden_lo.size,
        int(hidden_likes.sum()),
        int(hidden_ratings.sum()),
        extra={"action": "evaluate.hide", "hidden_pairs": int(hidden_lo.size)},
    )
    return visible


def default_now(frames: dict[str, pd.DataFrame]) -> dt.datetime:
    """The latest ``last_active_at`` or ``created_at`` of the source users."""
    users = frames["users"]
    stamps = pd.concat([users["created_at"], users["last_active_at"]]).dropna()
    if stamps.empty:
        raise InputDataError("the users table is empty: nothing to evaluate")
    return pd.Timestamp(stamps.max()).tz_convert("UTC").to_pydatetime()


# ------------------------------------------------------------------------------ scoring


def _rows_in(pop: Population, ids: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], Any]:
    pos = np.minimum(np.searchsorted(pop.user_ids, ids), max(pop.n_users - 1, 0))
    found = pop.user_ids[pos] == ids if pop.n_users else np.zeros(ids.size, dtype=np.bool_)
    return pos.astype(np.int64), found


def score_rows(
    pop: Population, rows: evaluation.DirectedRows, params: scoring.ScoreParams
) -> npt.NDArray[np.float64]:
    """(2p,) float64 score of each directed row under ``params``; NaN where a user is missing.

    Every row is kept (top K = all) and the exposure cap is off (see the module docstring).
    """
    a, a_ok = _rows_in(pop, rows.viewer_ids)
    b, b_ok = _rows_in(pop, rows.candidate_ids)
    ok = a_ok & b_ok
    out = np.full(len(rows), np.nan)
    if not ok.any():
        return out
    params = dataclasses.replace(params, top_k=len(rows), exposure_cap=None)
    scored = scoring.score_pairs(pop, a[ok], b[ok], params)
    n = np.int64(max(pop.n_users, 1))
    scored_keys = scored.user_rows * n + scored.cand_rows
    order = np.argsort(scored_keys)
    wanted = a[ok] * n + b[ok]
    pos = order[np.searchsorted(scored_keys, wanted, sorter=order)]
    out[np.flatnonzero(ok)] = scored.score[pos]
    return out


RATING_QUALITY_WEIGHTS = scoring.SignalWeights.only("rating_quality")


# ------------------------------------------------------------------------------ the run


def _score_in_scratch(
    engine: sa.Engine,
    candidates: Sequence[Candidate],
    options: Options,
    parts: Split,
    all_rows: evaluation.DirectedRows,
    now: dt.datetime,
    show_progress: bool,
) -> tuple[
    dict[tuple[str, bool], npt.NDArray[np.float64]], dict[str, npt.NDArray[np.float64]], str | None
]:
    """Every config's row scores (fusion on and off) and the rating-quality baseline's,
    from signal tables rebuilt on the visible rows in a scratch database; and the scratch
    database's URL when it is kept. Configs whose signal settings agree share one rebuild."""
    groups: dict[str, list[Candidate]] = {}
    for cand in candidates:
        groups.setdefault(scratch.signal_settings_key(cand.config), []).append(cand)

    # name → (reciprocal → row scores); computed on the full rows, NaN where unscorable.
    config_scores: dict[tuple[str, bool], npt.NDArray[np.float64]] = {}
    baseline_scores: dict[str, npt.NDArray[np.float64]] = {}
    with scratch.scratch_database(
        engine, options.scratch_url, options.keep_scratch, options.reset_scratch
    ) as (scratch_engine, url):
        scratch_kept = url if options.keep_scratch or options.scratch_url else None
        written = scratch.fill_scratch(scratch_engine, parts.visible)
        logger.info(
            "scratch database %s filled: %s",
            engine_mod.redact(url),
            written,
            extra={"action": "evaluate.fill", "rows": written},
        )
        for group in groups.values():
            scratch.run_signal_jobs(
                scratch_engine, url, group[0].config, now, show_progress=show_progress
            )
            pop = scratch.load_population(scratch_engine, group[0].config, now)
            for cand in group:
                params = match.settings_from_config(cand.config).scoring
                for reciprocal in (True, False):
                    config_scores[(cand.name, reciprocal)] = score_rows(
                        pop, all_rows, dataclasses.replace(params, reciprocal=reciprocal)
                    )
            if not baseline_scores:
                # Baselines use the first group's signals (the reference config's, normally).
                quality_only = dataclasses.replace(
                    match.settings_from_config(group[0].config).scoring,
                    weights=RATING_QUALITY_WEIGHTS,
                    reciprocal=False,
                    dormancy=False,
                )
                baseline_scores["rating_quality"] = score_rows(pop, all_rows, quality_only)

    return config_scores, baseline_scores, scratch_kept


def _entries(
    candidates: Sequence[Candidate],
    config_keys: list[tuple[str, bool]],
    baseline_names: Sequence[str],
    rows: evaluation.DirectedRows,
    scorer_rows: npt.NDArray[np.float64],
    boot: npt.NDArray[np.float64] | None,
    k: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The result's ``baselines`` and ``configs`` entries: metrics, 95 % intervals, ROC
    points and each config's lead over every baseline. ``scorer_rows`` holds the configs'
    rows (in ``config_keys`` order) then the baselines'; ``boot`` their bootstrap AUCs."""
    n_configs = len(config_keys)

    def interval(column: Any) -> list[float] | None:
        if boot is None:
            return None
        low, high = ranking_metrics.percentile_interval(column)
        return None if math.isnan(low) else [round(low, 6), round(high, 6)]

    baselines = []
    baseline_auc: dict[str, float] = {}
    for j, name in enumerate(baseline_names):
        measured = evaluation.measure(rows, scorer_rows[n_configs + j], k)
        baseline_auc[name] = float(measured.values["auc_mutual"])
        baselines.append(
            {
                "name": name,
                "description": BASELINE_DESCRIPTIONS[name],
                "metrics": _clean(measured.values),
                "auc_mutual_ci95": interval(boot[:, n_configs + j] if boot is not None else None),
                "roc": _roc(measured),
            }
        )
    configs = []
    by_name = {cand.name: cand for cand in candidates}
    for i, (name, reciprocal) in enumerate(config_keys):
        cand = by_name[name]
        measured = evaluation.measure(rows, scorer_rows[i], k)
        value = float(measured.values["auc_mutual"])
        versus: dict[str, dict[str, Any]] = {}
        for j, base in enumerate(baseline_names):
            diff = value - baseline_auc[base]
            versus[base] = {
                "diff": None if math.isnan(diff) else round(diff, 6),
                "ci95": interval(boot[:, i] - boot[:, n_configs + j] if boot is not None else None),
            }
        configs.append(
            {
                "name": cand.name,
                "source": cand.source,
                "algorithm_version": cand.config.algorithm_version,
                "config_hash": cand.config.content_hash,
                "reciprocal": reciprocal,
                "served": reciprocal == cand.config.scoring.reciprocal.enabled,
                "fusion": cand.config.scoring.reciprocal.combine if reciprocal else None,
                "metrics": _clean(measured.values),
                "auc_mutual_ci95": interval(boot[:, i] if boot is not None else None),
                "roc": _roc(measured),
                "vs_baselines": versus,
                "summary": summary_sentence(cand.name, reciprocal, value, versus),
            }
        )
    return baselines, configs


def evaluate(
    engine: sa.Engine,
    database_url: str,
    candidates: Sequence[Candidate],
    options: Options,
    *,
    show_progress: bool = False,
    created_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """Evaluate ``candidates`` on the database at ``engine``; return the result dict."""
    if not candidates:
        raise ConfigError("evaluate needs at least one config")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ConfigError(f"config names must be unique; got {names}")
    frames = read_source(engine)
    now = options.now or default_now(frames)
    parts = split(frames, options.hidden_fraction, options.seed)
    likes = frames["likes"]
    all_rows = evaluation.directed_rows(
        parts.hidden_lo,
        parts.hidden_hi,
        likes["user_id"].to_numpy(dtype=np.int64),
        likes["target_id"].to_numpy(dtype=np.int64),
        likes["kind"].astype(str).to_numpy() == "like",
    )
    config_scores, baseline_scores, scratch_kept = _score_in_scratch(
        engine, candidates, options, parts, all_rows, now, show_progress
    )
    visible_likes = parts.visible["likes"]
    baseline_scores["like_rates"], baseline_scores["reciprocal_popularity"] = (
        evaluation.reciprocal_popularity(
            all_rows.viewer_ids,
            all_rows.candidate_ids,
            visible_likes["user_id"].to_numpy(dtype=np.int64),
            visible_likes["target_id"].to_numpy(dtype=np.int64),
            visible_likes["kind"].astype(str).to_numpy() == "like",
        )
    )
    baseline_scores["random"] = np.random.default_rng([options.seed, 1]).random(len(all_rows))

    # Only pairs every scorer can score (both rows finite everywhere) are measured.
    finite = np.ones(len(all_rows), dtype=np.bool_)
    for values in (*config_scores.values(), *baseline_scores.values()):
        finite &= np.isfinite(values)
    keep_pairs = finite.reshape(-1, 2).all(axis=1) if len(all_rows) else np.zeros(0, bool)
    rows = evaluation.subset_pairs(all_rows, keep_pairs)
    row_keep = np.repeat(keep_pairs, 2)

    baseline_names = BASELINE_NAMES
    config_keys = [(cand.name, r) for cand in candidates for r in (True, False)]
    scorer_rows = np.vstack(
        [config_scores[key][row_keep] for key in config_keys]
        + [baseline_scores[name][row_keep] for name in baseline_names]
    )
    # Paired bootstrap over pairs: every scorer sees the same resamples.
    boot = (
        ranking_metrics.bootstrap_auc(
            rows.pair_index,
            scorer_rows,
            rows.mutual,
            options.bootstrap,
            np.random.default_rng([options.seed, 2]),
        )
        if options.bootstrap and len(rows)
        else None
    )
    baselines, configs = _entries(
        candidates, config_keys, baseline_names, rows, scorer_rows, boot, options.k
    )
    notes = [
        "Scores are the product's score_pairs output for each hidden pair in both directions; "
        "the exposure cap is off (it depends on whole top-K lists).",
        f"Pairs left out because a user is not in the scored population (inactive or "
        f"invalid): {int((~keep_pairs).sum())}.",
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "created_at": (created_at or runner.utcnow()).isoformat(),
        "database": engine_mod.redact(database_url),
        "now": now.isoformat(),
        "hidden_fraction": options.hidden_fraction,
        "seed": options.seed,
        "k": options.k,
        "n_decision_pairs": parts.n_decision_pairs,
        "n_hidden_pairs": int(parts.hidden_lo.size),
        "n_evaluated_pairs": int(keep_pairs.sum()),
        "n_rows": len(rows),
        "scratch_database": None if scratch_kept is None else engine_mod.redact(scratch_kept),
        "configs": configs,
        "baselines": baselines,
        "notes": notes,
    }


def summary_sentence(
    name: str, reciprocal: bool, value: float, versus: dict[str, dict[str, Any]]
) -> str:
    """One plain sentence: by how much mutual-match AUC beats each baseline, or that it does not.

    A lead whose 95% interval reaches 0 is called what it is: within noise.
    """
    label = f"{name} (reciprocal {'on' if reciprocal else 'off'})"
    if math.isnan(value):
        return f"{label}: mutual-match AUC is undefined (no mutual or no non-mutual hidden pair)."
    beats, noise, loses = [], [], []
    for base, entry in versus.items():
        diff, ci = entry["diff"], entry["ci95"]
        if diff is None:
            continue
        shown = f"{base} by {diff:+.3f}"
        if ci is not None:
            shown += f" (95% CI {ci[0]:+.3f} to {ci[1]:+.3f})"
        if diff <= 0:
            loses.append(shown.replace(" by ", " ", 1))
        elif ci is not None and ci[0] <= 0:
            noise.append(shown)
        else:
            beats.append(shown)
    parts = [f"{label}: mutual-match AUC {value:.3f}"]
    if beats:
        parts.append("beats " + ", ".join(beats))
    if noise:
        parts.append("leads " + ", ".join(noise) + ", but within noise")
    if loses:
        parts.append("does NOT beat " + ", ".join(loses))
    return "; ".join(parts) + "."


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """NaN → None (JSON null); floats rounded to 6 places."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, float):
            out[key] = None if math.isnan(value) else round(value, 6)
        else:
            out[key] = value
    return out


def _roc(measured: evaluation.ScoreMetrics) -> dict[str, dict[str, list[float]]]:
    return {
        "mutual": {
            "fpr": np.round(measured.roc_mutual[0], 6).tolist(),
            "tpr": np.round(measured.roc_mutual[1], 6).tolist(),
        },
        "like": {
            "fpr": np.round(measured.roc_like[0], 6).tolist(),
            "tpr": np.round(measured.roc_like[1], 6).tolist(),
        },
    }


def write_result(result: dict[str, Any], path: Path) -> None:
    """Write the result JSON (creating the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n", encoding="utf-8")
