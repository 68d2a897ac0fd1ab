"""Fit the signal weights and the reciprocal setting offline; report them on held-out pairs.

Scope: the whole source database, read-only; writes only the experiment YAML (and the scratch
databases of :mod:`jobs.tools.evaluate`, dropped afterwards).

The method, on ``evaluate``'s machinery so that nothing it is judged on was fitted on:

1. **Held-out pairs.** ``evaluate.split`` hides a seeded ``hidden_fraction`` of the decision
   pairs exactly as ``matchjobs evaluate --seed S`` does. Nothing below sees them until step 5.
2. **Cross-fitted signals.** The *visible* pairs are dealt into ``folds`` seeded folds. For
   each fold, the production signal jobs run on a scratch copy of the visible rows without
   that fold's pairs, and the fold's pairs are given the signals of that copy: a pair's own
   like, pass or rating never shapes the signals it is fitted on, as in production, where a
   pair is scored before it is decided. (Each copy holds (folds − 1) / folds of the visible
   decisions: with 5 folds and hidden fraction 0.2, as much as evaluate's copy holds.)
3. **Inner split.** The visible pairs are split by pair into a training part and a validation
   part (``validation_fraction``). ``compute.tuning.tune`` fits non-negative weights on the
   training rows' likes and picks the L2 strength by validation log-loss, then the
   reciprocal setting (off / harmonic / geometric / min / the calibrated ones) by validation
   mutual-match AUC; the served weights are then refitted at that L2 on both parts.
4. The weights and the reciprocal setting are written as an experiment YAML (merged over
   the base config, like every experiment file) whose header says how it was made.
5. **Held-out report.** ``evaluate.evaluate`` scores the held-out pairs with the fitted
   config and the base config (signals from every visible decision), against every baseline.

Every signal of the registry (``compute.signals.SIGNALS``) is a feature: a new signal is
fitted with no edit here. ``rating_quality`` enters split by rating dimension (one column
per dimension: the quality that dimension alone would give, :class:`Features`), so the fit
also weighs the dimensions against each other; the file then holds their weights as
``ratings.dimension_weights`` and the sum of their coefficients as rating_quality's. The
served score is the same function of the features either way.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import tempfile
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlalchemy as sa

from compute import evaluation, ratings, scoring, signals, tuning
from compute.population import Population
from jobs import config as config_mod
from jobs.config import Config
from jobs.errors import ConfigError, TooFewPairsError
from jobs.match import core as match
from jobs.storage import engine as engine_mod
from jobs.tools import evaluate, scratch

logger = logging.getLogger(__name__)

DEFAULT_MIN_PAIRS = 200
DEFAULT_FOLDS = 5
# Weights are written to 4 decimals: finer digits are the optimiser's noise, not the data's.
WEIGHT_DIGITS = 4
DEFAULT_VERSION = "v1-tuned"
# The fit's pairs need both kinds of decision, and validation a mutual like to choose fusion.
MIN_CLASS_ROWS = 10


@dataclasses.dataclass(frozen=True)
class Options:
    """How to tune.

    Attributes
    ----------
    hidden_fraction, seed, k, now, bootstrap, scratch_url, reset_scratch
        As in :class:`jobs.tools.evaluate.Options`: the held-out pairs are exactly those
        ``evaluate --seed seed --hidden-fraction hidden_fraction`` hides.
    folds : int ≥ 2
        Cross-fitting folds of the visible pairs (one signal-job run each).
    fit_seed : int or None
        Seeds the folds and the inner split; None = ``seed + 1``.
    validation_fraction : float in (0, 1)
        Share of the visible pairs kept for validation (never fitted on).
    min_pairs : int ≥ 1
        Fewest visible decision pairs to tune on.
    algorithm_version : str
        Written in the experiment YAML.
    l2_grid : tuple of float
    """

    hidden_fraction: float = 0.2
    seed: int = 0
    k: int = evaluate.DEFAULT_K
    now: dt.datetime | None = None
    bootstrap: int = evaluate.DEFAULT_BOOTSTRAP
    scratch_url: str | None = None
    reset_scratch: bool = False
    folds: int = DEFAULT_FOLDS
    fit_seed: int | None = None
    validation_fraction: float = 0.5
    min_pairs: int = DEFAULT_MIN_PAIRS
    algorithm_version: str = DEFAULT_VERSION
    l2_grid: tuple[float, ...] = tuning.DEFAULT_L2_GRID

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(
                f"validation fraction must be in (0, 1) (exclusive); got {self.validation_fraction}"
            )
        if self.folds < 2:
            raise ConfigError(f"folds must be at least 2; got {self.folds}")
        if self.min_pairs < 1:
            raise ConfigError(f"min_pairs must be ≥ 1; got {self.min_pairs}")
        # The held-out evaluation checks the rest when it builds its own Options.
        self.evaluate_options()

    @property
    def inner_seed(self) -> int:
        return self.seed + 1 if self.fit_seed is None else self.fit_seed

    def evaluate_options(self, *, reset_scratch: bool | None = None) -> evaluate.Options:
        return evaluate.Options(
            hidden_fraction=self.hidden_fraction,
            seed=self.seed,
            k=self.k,
            now=self.now,
            scratch_url=self.scratch_url,
            reset_scratch=self.reset_scratch if reset_scratch is None else reset_scratch,
            bootstrap=self.bootstrap,
        )


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What ``tune`` made: the file, the fit, the facts behind it and the held-out result."""

    path: Path
    config: Config
    fit: tuning.TuneResult
    facts: dict[str, Any]
    evaluation: dict[str, Any]


# ------------------------------------------------------------------------------ features

QUALITY = signals.index("rating_quality")


@dataclasses.dataclass(frozen=True)
class Features:
    """The fit's columns: every registered signal, with ``rating_quality`` split into one
    column per rating dimension when there are two or more.

    Column ``d`` of the split holds :func:`compute.ratings.reweighted_quality` with all the
    weight on dimension ``d`` (neutral where the candidate has no quality). Quality under
    weights ``w`` (summing to 1) is ``Σ_d w_d`` times those columns, so coefficients
    ``γ_d ≥ 0`` on them are rating_quality's coefficient ``Σ γ`` with dimension weights
    ``γ / Σ γ``: the fitted model and the served score agree exactly.

    Attributes
    ----------
    dimension_names : tuple of str
        The catalogue's dimensions by id (the order of the centred vectors).
    base_weights : (d,) float64
        The weights the loaded quality was taken with (the base config's).
    """

    dimension_names: tuple[str, ...]
    base_weights: npt.NDArray[np.float64]

    @classmethod
    def of(cls, frames: dict[str, pd.DataFrame], base: Config) -> Features:
        dims = frames["rating_dimensions"].sort_values("id", kind="stable")
        names = tuple(str(name) for name in dims["name"])
        try:
            weights = ratings.dimension_weights(list(names), base.ratings.dimension_weights)
        except ValueError as exc:
            raise ConfigError(f"ratings.{exc}") from None
        return cls(dimension_names=names, base_weights=weights)

    @property
    def split(self) -> bool:
        return len(self.dimension_names) > 1

    @property
    def width(self) -> int:
        n = len(signals.SIGNALS)
        return n - 1 + len(self.dimension_names) if self.split else n

    def expand(
        self,
        values: npt.NDArray[np.float64],
        pop: Population,
        rows: npt.NDArray[np.int64],
        neutral: float,
    ) -> npt.NDArray[np.float64]:
        """(r, width): ``values`` (r, n_signals) with rating_quality split, the candidates
        being ``rows`` of ``pop``."""
        if not self.split:
            return values
        d = len(self.dimension_names)
        centred = pop.rating_dims[rows].astype(np.float64)
        has = pop.has_rating_quality[rows]
        if centred.shape[1] != d:  # no standing in this copy: every value neutral
            centred, has = np.zeros((rows.size, d)), np.zeros(rows.size, dtype=np.bool_)
        quality = pop.rating_quality[rows].astype(np.float64)
        parts = [
            np.where(
                has, ratings.reweighted_quality(quality, centred, self.base_weights, one), neutral
            )
            for one in np.eye(d)
        ]
        return np.column_stack([values[:, :QUALITY], *parts, values[:, QUALITY + 1 :]])

    def collapse(self, columns: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Per-column numbers (weights, coefficients; extra trailing ones kept) summed back
        to one per signal."""
        if not self.split:
            return columns
        d = len(self.dimension_names)
        joined = columns[QUALITY : QUALITY + d].sum(keepdims=True)
        return np.concatenate([columns[:QUALITY], joined, columns[QUALITY + d :]])

    def _dimension_part(self, columns: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The split columns' numbers (empty when not split)."""
        if not self.split:
            return columns[:0]
        return columns[QUALITY : QUALITY + len(self.dimension_names)]

    def dimension_coefficients(self, columns: npt.NDArray[np.float64]) -> dict[str, float]:
        """Each split column's number, labelled ``rating_quality[<dimension>]``."""
        return {
            f"rating_quality[{name}]": float(c)
            for name, c in zip(self.dimension_names, self._dimension_part(columns), strict=False)
        }

    def dimension_weights(self, columns: npt.NDArray[np.float64]) -> dict[str, float]:
        """The dimension weights the fitted columns give (empty: not split, or no weight)."""
        part = self._dimension_part(columns)
        if not part.sum() > 0:
            return {}
        return {
            name: round(float(w), WEIGHT_DIGITS)
            for name, w in zip(self.dimension_names, part / part.sum(), strict=True)
        }


def _row_signals(
    pop: Population, rows: evaluation.DirectedRows, config: Config, features: Features
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.bool_],
]:
    """Forward and reverse signals of the rows (missing → neutral), the like rate given of
    each direction's viewer (NaN where the likes job has none), and which pairs are scored.

    A pair one of whose users is not in the population is left out, as evaluate does.
    """
    a = pd.Index(pop.user_ids).get_indexer(rows.viewer_ids)
    b = pd.Index(pop.user_ids).get_indexer(rows.candidate_ids)
    keep_pairs = ((a >= 0) & (b >= 0)).reshape(-1, 2).all(axis=1)
    ok = np.repeat(keep_pairs, 2)
    params = match.settings_from_config(config).scoring
    computed = signals.compute_signals(pop, a[ok], b[ok], params.signal_params, with_reverse=True)
    neutral = signals.neutral_values(params.neutral)
    assert computed.reverse_values is not None  # with_reverse=True
    forward = np.where(np.isnan(computed.values), neutral, computed.values)
    reverse = np.where(np.isnan(computed.reverse_values), neutral, computed.reverse_values)
    forward = features.expand(forward, pop, b[ok], float(neutral[QUALITY]))
    reverse = features.expand(reverse, pop, a[ok], float(neutral[QUALITY]))
    forward_rates = scoring.viewer_rates(pop, a[ok], np.nan)
    reverse_rates = scoring.viewer_rates(pop, b[ok], np.nan)
    return forward, reverse, forward_rates, reverse_rates, keep_pairs


def _too_few(what: str, found: int, needed: int) -> TooFewPairsError:
    return TooFewPairsError(
        f"too few decided pairs to tune: {what} {found}, at least {needed} needed; "
        "collect more likes and passes (or lower --min-pairs)"
    )


def _cross_fitted(
    engine: sa.Engine,
    base: Config,
    visible: dict[str, pd.DataFrame],
    options: Options,
    now: dt.datetime,
    features: Features,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], evaluation.DirectedRows]:
    """Both directions' signals of every visible pair, each fold's from a copy without it.

    Returns the forward and reverse signals and the labelled rows of the pairs whose two
    users are in their fold's population.
    """
    likes = visible["likes"]
    user_ids = likes["user_id"].to_numpy(dtype=np.int64)
    target_ids = likes["target_id"].to_numpy(dtype=np.int64)
    kinds = likes["kind"].astype(str).to_numpy()
    lo, hi = evaluation.decision_pairs(user_ids, target_ids, np.isin(kinds, ["like", "pass"]))
    rows = evaluation.directed_rows(lo, hi, user_ids, target_ids, kinds == "like")
    fold_of = np.random.default_rng(options.inner_seed).permutation(lo.size) % options.folds
    m = features.width
    forward = np.full((len(rows), m), np.nan)
    reverse = np.full((len(rows), m), np.nan)
    forward_rates = np.full(len(rows), np.nan)
    reverse_rates = np.full(len(rows), np.nan)
    scored = np.zeros(lo.size, dtype=np.bool_)
    for fold in range(options.folds):
        in_fold = fold_of == fold
        reset = options.reset_scratch or (options.scratch_url is not None and fold > 0)
        with scratch.scratch_database(engine, options.scratch_url, False, reset) as (db, url):
            scratch.fill_scratch(db, evaluate.hide(visible, lo[in_fold], hi[in_fold]))
            scratch.run_signal_jobs(db, url, base, now)
            pop = scratch.load_population(db, base, now)
        fold_forward, fold_reverse, fold_fr, fold_rr, keep = _row_signals(
            pop, evaluation.subset_pairs(rows, in_fold), base, features
        )
        pairs = np.flatnonzero(in_fold)[keep]
        # Row 2i is pair i's lo → hi direction, row 2i + 1 its reverse.
        fold_rows = np.column_stack([2 * pairs, 2 * pairs + 1]).reshape(-1)
        forward[fold_rows], reverse[fold_rows] = fold_forward, fold_reverse
        forward_rates[fold_rows], reverse_rates[fold_rows] = fold_fr, fold_rr
        scored[pairs] = True
    keep_rows = np.repeat(scored, 2)
    return (
        forward[keep_rows],
        reverse[keep_rows],
        forward_rates[keep_rows],
        reverse_rates[keep_rows],
        evaluation.subset_pairs(rows, scored),
    )


def fit(
    engine: sa.Engine, base: Config, options: Options
) -> tuple[tuning.TuneResult, dict[str, Any]]:
    """Steps 1–3 of the module docstring: the fitted weights and the facts of the fit."""
    frames = evaluate.read_source(engine)
    now = options.now or evaluate.default_now(frames)
    outer = evaluate.split(frames, options.hidden_fraction, options.seed)
    n_visible = outer.n_decision_pairs - int(outer.hidden_lo.size)
    if n_visible < options.min_pairs:
        raise _too_few("visible decision pairs", n_visible, options.min_pairs)
    features = Features.of(frames, base)
    forward, reverse, forward_rates, reverse_rates, rows = _cross_fitted(
        engine, base, outer.visible, options, now, features
    )
    # A viewer the likes job has no rate for counts as the average known one, in the fit
    # and in the served model (Calibration.default_rate).
    known = forward_rates[np.isfinite(forward_rates)]
    default_rate = float(known.mean()) if known.size else 0.5
    forward_rates = np.where(np.isfinite(forward_rates), forward_rates, default_rate)
    reverse_rates = np.where(np.isfinite(reverse_rates), reverse_rates, default_rate)
    n_pairs = len(rows) // 2
    is_validation = np.zeros(n_pairs, dtype=np.bool_)
    is_validation[
        evaluation.sample_hidden(
            n_pairs, options.validation_fraction, np.random.default_rng([options.inner_seed, 1])
        )
    ] = True
    val_rows = is_validation[rows.pair_index]
    train = ~val_rows & rows.decided
    n_liked, n_passed = int(rows.liked[train].sum()), int((~rows.liked[train]).sum())
    if min(n_liked, n_passed) < MIN_CLASS_ROWS:
        raise _too_few("fitted rows with a like / a pass", min(n_liked, n_passed), MIN_CLASS_ROWS)
    n_val_mutual = int(rows.mutual[val_rows].sum()) // 2
    if n_val_mutual < 1 or not (rows.decided[val_rows] & ~rows.liked[val_rows]).any():
        raise _too_few("validation pairs with a mutual like", n_val_mutual, 1)
    validation = tuning.Validation(
        forward=forward[val_rows],
        reverse=reverse[val_rows],
        decided=rows.decided[val_rows],
        liked=rows.liked[val_rows],
        mutual=rows.mutual[val_rows],
        forward_rates=forward_rates[val_rows],
        reverse_rates=reverse_rates[val_rows],
    )
    result = tuning.tune(
        forward[train],
        rows.liked[train],
        validation,
        options.l2_grid,
        train_rates=forward_rates[train],
        default_rate=default_rate,
    )
    dimension_weights = features.dimension_weights(result.weights)
    dimension_coefficients = features.dimension_coefficients(result.fit.coefficients)
    # One weight and coefficient per signal again, rating_quality's the sum of its columns.
    result = dataclasses.replace(
        result,
        weights=features.collapse(result.weights),
        fit=dataclasses.replace(
            result.fit, coefficients=features.collapse(result.fit.coefficients)
        ),
        choosing_fit=dataclasses.replace(
            result.choosing_fit, coefficients=features.collapse(result.choosing_fit.coefficients)
        ),
    )
    if not result.weights.sum() > 0:
        raise TooFewPairsError(
            "no signal predicts the fitted likes (every fitted weight is 0): the decided "
            "pairs carry no usable signal; collect more decisions or signal data"
        )
    facts = {
        "now": now.isoformat(),
        "n_decision_pairs": outer.n_decision_pairs,
        "n_hidden_pairs": int(outer.hidden_lo.size),
        "n_visible_pairs": n_visible,
        "n_fit_pairs_scored": n_pairs,
        "n_train_pairs": int(n_pairs - is_validation.sum()),
        "n_train_rows": int(train.sum()),
        "n_train_likes": n_liked,
        "n_validation_pairs": int(is_validation.sum()),
        "dimension_weights": dimension_weights,
        "dimension_coefficients": dimension_coefficients,
    }
    logger.info(
        "fitted %d weights on %d rows; reciprocal %s",
        len(signals.SIGNALS),
        facts["n_train_rows"],
        result.fusion or "off",
        extra={"action": "tune.fit", **facts},
    )
    return result, facts


# ------------------------------------------------------------------------------ the YAML


def experiment_mapping(
    result: tuning.TuneResult, version: str, dimension_weights: dict[str, float] | None = None
) -> dict[str, Any]:
    """The experiment file's settings: algorithm_version, every weight, scoring.reciprocal,
    and ``ratings.dimension_weights`` when the fit weighed the rating dimensions.

    Every other setting is the base config's: the file is merged over it.
    """
    reciprocal: dict[str, Any] = {"enabled": result.reciprocal}
    if result.fusion is not None:
        reciprocal["combine"] = result.fusion
    if scoring.is_calibrated(result.fusion) and result.calibration is not None:
        reciprocal["calibration"] = {
            key: round(float(value), WEIGHT_DIGITS)
            for key, value in dataclasses.asdict(result.calibration).items()
        }
    return {
        "algorithm_version": version,
        "weights": {
            s.key: round(float(w), WEIGHT_DIGITS)
            for s, w in zip(signals.SIGNALS, result.weights, strict=True)
        },
        "scoring": {"reciprocal": reciprocal},
        **({"ratings": {"dimension_weights": dimension_weights}} if dimension_weights else {}),
    }


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def held_out_lines(result: dict[str, Any]) -> list[str]:
    """One line per scorer of an evaluate result: the metrics a ranker is judged by."""
    k = result["k"]
    lines = [
        f"{'scorer':<34} {'AUC mutual [95% CI]':<22} {'AUC like':>8} {'vAUC mut':>8} "
        f"{'vAUC like':>9} {f'NDCG@{k} mut':>10} {f'vNDCG@{k} like':>13}"
    ]

    def line(label: str, entry: dict[str, Any]) -> str:
        m, ci = entry["metrics"], entry["auc_mutual_ci95"]
        auc = _f(m["auc_mutual"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        return (
            f"{label:<34} {auc:<22} {_f(m['auc_like']):>8} {_f(m['viewer_auc_mutual']):>8} "
            f"{_f(m['viewer_auc_like']):>9} {_f(m['ndcg_at_k_mutual']):>10} "
            f"{_f(m['viewer_ndcg_at_k_like']):>13}"
        )

    for entry in result["configs"]:
        mode = entry["fusion"] or "off"
        served = " (served)" if entry["served"] else ""
        lines.append(line(f"{entry['name']}, reciprocal {mode}{served}", entry))
    for entry in result["baselines"]:
        lines.append(line(f"[baseline] {entry['name']}", entry))
    return lines


def experiment_yaml(
    mapping: dict[str, Any],
    result: tuning.TuneResult,
    facts: dict[str, Any],
    options: Options,
    *,
    command: str,
    database: str,
    base_files: Sequence[str],
    held_out: dict[str, Any] | None,
    note: str | None = None,
) -> str:
    """The experiment file: a header saying how it was made, then the settings."""
    fit = result.fit
    header = [
        "Experiment fitted by `matchjobs tune` (jobs/tools/tune.py); do not edit the weights by",
        "hand: rerun the command below on the data at hand instead.",
        f"Command: {command}",
    ]
    if note:
        header.append(f"Note: {note}")
    header += [
        "",
        f"Database: {database}; signals at {facts['now']}; base config: "
        + " + ".join(["configs/default.yaml", *base_files]),
        f"Decision pairs: {facts['n_decision_pairs']}. Held out (never fitted on, hidden from "
        f"every signal table): hidden fraction {options.hidden_fraction}, seed {options.seed} "
        f"-> {facts['n_hidden_pairs']} pairs, the same as `matchjobs evaluate --seed "
        f"{options.seed} --hidden-fraction {options.hidden_fraction}` hides.",
        f"Fitted on: the {facts['n_visible_pairs']} visible pairs in {options.folds} folds "
        f"(seed {options.inner_seed}), each fold's signals from the production jobs on a copy "
        f"without that fold's pairs; {facts['n_fit_pairs_scored']} pairs with both users in "
        f"the population: {facts['n_train_pairs']} fitted ({facts['n_train_rows']} decided "
        f"rows, {facts['n_train_likes']} likes), {facts['n_validation_pairs']} for validation "
        f"(fraction {options.validation_fraction}).",
        "",
        "Fit: P(viewer likes candidate) = sigmoid(c + sum_i b_i x_i + g * viewer's like rate "
        "given), b, g >= 0, L2-regularised logistic",
        "regression over every registered signal (missing = neutral); weights = b / sum(b).",
        f"L2 chosen by validation log-loss: {fit.l2:g} ("
        + ", ".join(f"{l2:g}: {_f(loss, 4)}" for l2, loss in result.l2_log_loss)
        + ").",
        f"Then fitted at that L2 on the fitted and validation rows together (the served "
        f"weights): train log-loss {fit.train_log_loss:.4f} on {fit.n_rows} rows "
        f"({fit.n_positive} likes), intercept {fit.intercept:.4f}, converged {fit.converged} "
        f"in {fit.iterations} iterations.",
        "Coefficients b: "
        + ", ".join(
            f"{s.key} {c:.4f}"
            for s, c in zip(signals.SIGNALS, fit.coefficients[: len(signals.SIGNALS)], strict=True)
        )
        + (
            f"; g {fit.coefficients[len(signals.SIGNALS)]:.4f}"
            if fit.coefficients.size > len(signals.SIGNALS)
            else ""
        )
        + ".",
        *(
            [
                "rating_quality's coefficient is the sum of its dimensions': "
                + ", ".join(
                    f"{label} {c:.4f}" for label, c in facts["dimension_coefficients"].items()
                )
                + " -> ratings.dimension_weights."
            ]
            if facts.get("dimension_weights")
            else []
        ),
        f"Validation ({result.n_validation_rows} rows, {result.n_validation_decided} decided, "
        f"{result.n_validation_mutual} in mutual pairs; the fitted rows' fit): like AUC "
        f"{_f(result.validation_auc_like)}; mutual-match AUC by reciprocal choice: "
        + ", ".join(f"{label} {_f(v)}" for label, v in result.choice_auc_mutual)
        + f" -> {result.fusion or 'off'}.",
    ]
    if held_out is not None:
        header += [
            "",
            f"Held-out ({held_out['n_evaluated_pairs']} pairs, {held_out['n_rows']} rows; "
            "v = per viewer; CI = paired bootstrap over pairs):",
            *held_out_lines(held_out),
        ]
    text = "".join(f"# {line}".rstrip() + "\n" for line in _wrapped(header))
    reciprocal = mapping["scoring"]["reciprocal"]
    body = [f"algorithm_version: {mapping['algorithm_version']}", "weights:"]
    body += [f"  {key}: {value}" for key, value in mapping["weights"].items()]
    body += ["scoring:", "  reciprocal:", f"    enabled: {str(reciprocal['enabled']).lower()}"]
    if "combine" in reciprocal:
        body.append(f"    combine: {reciprocal['combine']}")
    if "calibration" in reciprocal:
        body.append("    calibration:  # the fitted like model of the calibrated fusion")
        body += [f"      {key}: {value}" for key, value in reciprocal["calibration"].items()]
    if "ratings" in mapping:
        body += ["ratings:", "  dimension_weights:  # of the rating dimensions in rating_quality"]
        body += [
            f"    {json.dumps(name)}: {value}"
            for name, value in mapping["ratings"]["dimension_weights"].items()
        ]
    return text + "\n".join(body) + "\n"


def _wrapped(lines: Sequence[str]) -> list[str]:
    """Prose wrapped at 96 columns; the command and the table lines kept whole."""
    out: list[str] = []
    for line in lines:
        keep = line.startswith("Command:") or "  " in line or len(line) <= 96
        out += [line] if keep else textwrap.wrap(line, 96, subsequent_indent="  ")
    return out


# ------------------------------------------------------------------------------ the run


def tune(
    engine: sa.Engine,
    database_url: str,
    base_files: Sequence[str],
    out: Path,
    options: Options,
    *,
    command: str,
    note: str | None = None,
) -> Outcome:
    """Fit, write the experiment YAML at ``out``, and evaluate it on the held-out pairs."""
    base = config_mod.load_config(base_files)  # a bad config stops before anything is read
    result, facts = fit(engine, base, options)
    mapping = experiment_mapping(result, options.algorithm_version, facts["dimension_weights"])
    database = engine_mod.redact(database_url)

    def render(held_out: dict[str, Any] | None) -> str:
        return experiment_yaml(
            mapping,
            result,
            facts,
            options,
            command=command,
            database=database,
            base_files=base_files,
            held_out=held_out,
            note=note,
        )

    # Validate the file exactly as a user will load it (merged over the base) before
    # anything is evaluated or written at ``out``.
    with tempfile.TemporaryDirectory(prefix="matchjobs-tune-") as tmp:
        draft = Path(tmp) / out.name
        draft.write_text(render(None), encoding="utf-8")
        tuned = config_mod.load_config([*base_files, draft])
    candidates = [
        evaluate.Candidate("default", "default", base),
        evaluate.Candidate(out.stem if out.stem != "default" else "tuned", str(out), tuned),
    ]
    held_out = evaluate.evaluate(
        engine,
        database_url,
        candidates,
        options.evaluate_options(reset_scratch=options.scratch_url is not None),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(held_out), encoding="utf-8")
    logger.info("wrote %s", out, extra={"action": "tune.write", "path": str(out)})
    return Outcome(path=out, config=tuned, fit=result, facts=facts, evaluation=held_out)
