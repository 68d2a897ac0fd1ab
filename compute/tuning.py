"""Fit the signal weights and choose reciprocal fusion from observed decisions.

The model is the product's own score, read as a like model. For a directed row a → b with
the registered signals x (missing ones at their neutral value, as :func:`compute.scoring.combine`
fills them), the viewer's like is modelled as

    P(a likes b) = σ(c + Σ_i β_i · x_i),    β_i ≥ 0,

fitted by L2-regularised logistic regression (mean log-loss + ``l2`` / 2 · ‖β‖², the intercept
c not penalised) with the bounds β ≥ 0 enforced by L-BFGS-B. The served weights are β / Σ β:
the product's score Σ w_i x_i / Σ w_i is then an increasing function of the fitted logit, so
it ranks rows exactly as the fitted model does. A signal that is constant on the rows (a
missing one, say) is indistinguishable from the intercept and gets weight 0 from the penalty.

When the viewers' like rates given ``g`` are known (the likes job's), the model also has
the viewer's own term, ``σ(c + Σ_i β_i x_i + γ · g_viewer)`` with γ ≥ 0: it cannot change
the order of one viewer's candidates, so the served weights stay β / Σ β, but it keeps the
viewer's pickiness out of the β, and it is what the ``calibrated*`` fusions need to tell how
likely each candidate is to say yes back (:class:`compute.scoring.Calibration` is
(c, Σ β, γ, the rate of a viewer without one)).

Choices are made on a *validation* set of rows never fitted on: ``l2`` from a grid by the
validation log-loss, then the reciprocal setting (off, or fusion on with one of
:data:`compute.scoring.FUSIONS`; the ``calibrated*`` ones only with the rates) by the
validation mutual-match AUC of the fused scores, pooled over rows as ``evaluate`` measures it. Ties
keep the earlier candidate (off first). With both chosen, the model is fitted once more at
the chosen ``l2`` on the training and the validation rows together (the validation rows
have done their job; discarding half the decisions would only make the weights noisier):
the served weights and calibration are that final fit's, the validation figures the
choosing fit's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from compute import ranking_metrics, scoring
from compute.arrays import BoolArray, FloatArray

DEFAULT_L2_GRID: tuple[float, ...] = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 1e-4, 1e-5)
# (reciprocal, fusion) in the order ties are resolved: off first, then the fusions.
RECIPROCAL_CHOICES: tuple[tuple[bool, str | None], ...] = (
    (False, None),
    *((True, fusion) for fusion in scoring.FUSIONS),
)


@dataclass(frozen=True)
class LogisticFit:
    """One non-negative logistic fit.

    Attributes
    ----------
    coefficients : (n_signals,) float64, ≥ 0
    intercept : float
    l2 : float
    train_log_loss : float
        Mean log-loss on the fitted rows (without the penalty).
    n_rows, n_positive : int
    converged : bool
    iterations : int
    """

    coefficients: FloatArray
    intercept: float
    l2: float
    train_log_loss: float
    n_rows: int
    n_positive: int
    converged: bool
    iterations: int

    def logits(self, features: FloatArray) -> FloatArray:
        """(n,) float64 fitted logit of (n, n_signals) features."""
        return features @ self.coefficients + self.intercept


def _check(features: FloatArray, labels: BoolArray, name: str) -> tuple[FloatArray, BoolArray]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.bool_)
    if x.ndim != 2:
        raise ValueError(f"{name}_features must be (n, n_signals); got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{name}_labels must be ({x.shape[0]},); got shape {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}_features must be finite (missing → neutral first)")
    return x, y


def log_loss(logits: FloatArray, labels: BoolArray) -> float:
    """Mean negative log-likelihood of ``labels`` under σ(``logits``)."""
    if logits.size == 0:
        return float("nan")
    # log(1 + e^z) − y·z, stable for large |z|.
    return float(np.mean(np.logaddexp(0.0, logits) - labels * logits))


def fit_logistic(features: FloatArray, labels: BoolArray, l2: float) -> LogisticFit:
    """Fit σ(c + β·x) with β ≥ 0 to the labels (see the module docstring).

    Parameters
    ----------
    features : (n, m) float64, finite
    labels : (n,) bool
    l2 : float ≥ 0
        Penalty on ‖β‖² (the loss is a mean, so it does not scale with n).

    Returns
    -------
    LogisticFit
    """
    x, y = _check(features, labels, "train")
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2 must be a finite number ≥ 0; got {l2!r}")
    n, m = x.shape
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == n:
        raise ValueError(f"labels need both classes; got {n_pos} positive of {n}")
    target = y.astype(np.float64)

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        beta, c = theta[:m], theta[m]
        z = x @ beta + c
        loss = np.mean(np.logaddexp(0.0, z) - target * z) + 0.5 * l2 * float(beta @ beta)
        residual = (special.expit(z) - target) / n
        grad = np.empty(m + 1)
        grad[:m] = x.T @ residual + l2 * beta
        grad[m] = residual.sum()
        return float(loss), grad

    prior = n_pos / n
    start = np.zeros(m + 1)
    start[m] = np.log(prior / (1.0 - prior))
    bounds = [(0.0, None)] * m + [(None, None)]
    result = optimize.minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-9},
    )
    beta = np.maximum(result.x[:m], 0.0)
    intercept = float(result.x[m])
    return LogisticFit(
        coefficients=beta,
        intercept=intercept,
        l2=float(l2),
        train_log_loss=log_loss(x @ beta + intercept, y),
        n_rows=n,
        n_positive=n_pos,
        converged=bool(result.success),
        iterations=int(result.nit),
    )


@dataclass(frozen=True)
class Validation:
    """The validation rows: both directions of each validation pair.

    Attributes
    ----------
    forward : (r, n_signals) float64
        Signals of viewer → candidate (missing → neutral).
    reverse : (r, n_signals) float64
        Signals of candidate → viewer.
    decided : (r,) bool
        The viewer decided about the candidate.
    liked : (r,) bool
    mutual : (r,) bool
    forward_rates, reverse_rates : (r,) float64 in [0, 1], optional
        Like rate given of the viewer (forward) and of the candidate (the reverse's viewer).
    """

    forward: FloatArray
    reverse: FloatArray
    decided: BoolArray
    liked: BoolArray
    mutual: BoolArray
    forward_rates: FloatArray | None = None
    reverse_rates: FloatArray | None = None


@dataclass(frozen=True)
class TuneResult:
    """The fitted weights, the chosen reciprocal setting and the figures behind them.

    Attributes
    ----------
    weights : (n_signals,) float64, ≥ 0, summing to 1 (all 0 when no signal helps)
    fit : LogisticFit
        The final fit, on the training and validation rows at the chosen ``l2`` (with the
        rates: one more coefficient, γ, last); the weights and calibration are its.
    choosing_fit : LogisticFit
        The fit on the training rows alone at the chosen ``l2``: the validation figures
        are its.
    reciprocal : bool
    fusion : str or None
    calibration : compute.scoring.Calibration or None
        The fitted like model, when the rates were given and a signal has weight.
    l2_log_loss : tuple of (l2, validation log-loss)
        Every ``l2`` tried.
    choice_auc_mutual : tuple of (label, validation mutual-match AUC)
        Every reciprocal choice tried ("off", "harmonic", …).
    validation_auc_like : float
        Validation like AUC of the fitted score (rows with a decision).
    validation_log_loss : float
    n_validation_rows, n_validation_decided, n_validation_mutual : int
    """

    weights: FloatArray
    fit: LogisticFit
    choosing_fit: LogisticFit
    reciprocal: bool
    fusion: str | None
    calibration: scoring.Calibration | None
    l2_log_loss: tuple[tuple[float, float], ...]
    choice_auc_mutual: tuple[tuple[str, float], ...]
    validation_auc_like: float
    validation_log_loss: float
    n_validation_rows: int
    n_validation_decided: int
    n_validation_mutual: int


def served_scores(
    weights: FloatArray,
    validation: Validation,
    reciprocal: bool,
    fusion: str | None,
    calibration: scoring.Calibration | None = None,
) -> FloatArray:
    """(r,) float64 the product's score of the validation rows under ``weights``."""
    forward = validation.forward @ weights
    if not reciprocal:
        return forward
    if fusion is None:
        raise ValueError("fusion must be given when reciprocal is True")
    fused = scoring.fuse(
        forward,
        validation.reverse @ weights,
        fusion,
        calibration,
        validation.forward_rates,
        validation.reverse_rates,
    )
    # float64 in, float64 out: the view only tells the checker.
    return np.asarray(fused, dtype=np.float64)


def _served_model(
    fit: LogisticFit, m: int, rated: bool, default_rate: float
) -> tuple[FloatArray, scoring.Calibration | None]:
    """The served weights β / Σ β of ``fit`` and, with the rates, its calibration."""
    total = float(fit.coefficients[:m].sum())
    weights = fit.coefficients[:m] / total if total > 0 else np.zeros(m)
    if not rated or total <= 0:
        return weights, None
    calibration = scoring.Calibration(
        intercept=float(fit.intercept),
        scale=total,
        viewer_rate=float(fit.coefficients[m]),
        default_rate=float(default_rate),
    )
    return weights, calibration


def tune(
    train_features: FloatArray,
    train_liked: BoolArray,
    validation: Validation,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    train_rates: FloatArray | None = None,
    default_rate: float = 0.5,
) -> TuneResult:
    """Fit the weights on the training rows, choose ``l2`` and the reciprocal setting on the
    validation rows (see the module docstring).

    Parameters
    ----------
    train_features : (n, n_signals) float64
        Signals of decided viewer → candidate rows (missing → neutral).
    train_liked : (n,) bool
    validation : Validation
    l2_grid : sequence of float ≥ 0, not empty
    train_rates : (n,) float64 in [0, 1], optional
        The viewers' like rates given; with ``validation.forward_rates`` and
        ``reverse_rates``, the fit has the viewer term and the ``calibrated*`` fusions are
        choices.
    default_rate : float in [0, 1]
        The rate the served model gives a viewer without one (``Calibration.default_rate``).

    Returns
    -------
    TuneResult
    """
    x, y = _check(train_features, train_liked, "train")
    m = x.shape[1]
    for name in ("forward", "reverse"):
        values = getattr(validation, name)
        if values.ndim != 2 or values.shape[1] != m:
            raise ValueError(f"validation.{name} must be (r, {m}); got {values.shape}")
    if not l2_grid:
        raise ValueError("l2_grid must not be empty")
    decided = validation.decided
    if not decided.any():
        raise ValueError("validation rows need at least one decision")
    val_x = validation.forward[decided]
    val_y = validation.liked[decided]
    rated = (
        train_rates is not None
        and validation.forward_rates is not None
        and validation.reverse_rates is not None
    )
    if rated:
        assert train_rates is not None and validation.forward_rates is not None
        if train_rates.shape != (x.shape[0],):
            raise ValueError(f"train_rates must be ({x.shape[0]},); got {train_rates.shape}")
        x = np.column_stack([x, train_rates])
        val_x = np.column_stack([val_x, validation.forward_rates[decided]])

    fits = [fit_logistic(x, y, l2) for l2 in l2_grid]
    losses = [log_loss(f.logits(val_x), val_y) for f in fits]
    choosing = fits[int(np.nanargmin(losses))]
    weights, calibration = _served_model(choosing, m, rated, default_rate)

    choices: list[tuple[str, float]] = []
    best_choice: tuple[bool, str | None] = RECIPROCAL_CHOICES[0]
    best_auc = -np.inf
    for reciprocal, fusion in RECIPROCAL_CHOICES:
        if scoring.is_calibrated(fusion) and calibration is None:
            continue
        value = ranking_metrics.auc(
            served_scores(weights, validation, reciprocal, fusion, calibration),
            validation.mutual,
        )
        choices.append((fusion or "off", value))
        if np.isfinite(value) and value > best_auc:
            best_auc, best_choice = value, (reciprocal, fusion)
    validation_auc_like = ranking_metrics.auc(val_x[:, :m] @ weights, val_y)
    final = fit_logistic(np.vstack([x, val_x]), np.concatenate([y, val_y]), choosing.l2)
    final_weights, final_calibration = _served_model(final, m, rated, default_rate)
    if scoring.is_calibrated(best_choice[1]) and final_calibration is None:
        # The final fit weighs no signal: nothing for a calibrated fusion to read.
        best_choice = RECIPROCAL_CHOICES[0]
    return TuneResult(
        weights=final_weights,
        fit=final,
        choosing_fit=choosing,
        reciprocal=best_choice[0],
        fusion=best_choice[1],
        calibration=final_calibration,
        l2_log_loss=tuple((f.l2, loss) for f, loss in zip(fits, losses, strict=True)),
        choice_auc_mutual=tuple(choices),
        validation_auc_like=validation_auc_like,
        validation_log_loss=float(np.nanmin(losses)),
        n_validation_rows=int(decided.size),
        n_validation_decided=int(decided.sum()),
        n_validation_mutual=int(validation.mutual.sum()),
    )
