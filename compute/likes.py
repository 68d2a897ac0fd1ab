"""Behaviour from likes and passes: like rates with shrinkage, and a taste/appeal model.

Input: directed decisions (decider ``u``, target ``t``, kind). Only likes and passes are
taste evidence. A **block** is a safety statement about one person, not an opinion of their
profile, so it enters neither the rates nor the model; blocks are only counted
(``LikeBehaviour.n_blocks``) so that a run's figures show how many were set aside.

Validation (``validate_decisions``) skips and counts rows, each under the first reason that
applies, in this order: ``unknown_kind`` (not like, pass or block), ``unknown_user`` (decider
or target not known), ``self_decision``, ``duplicate_decision`` (a second row for the same
(decider, target): the **last** in input order is kept).

Rates (``like_behaviour``), with ``m = prior_weight``::

    g            = likes / (likes + passes) over every valid decision  (0.5 when none)
    rate_given   = (likes_given_u + m g) / (decisions_given_u + m)        pickiness: low = picky
    rate_received = (likes_received_u + m g) / (decisions_received_u + m) desirability

A decision counts once for its decider (given) and once for its target (received), so both
rates shrink towards the same ``g``; a user without decisions has both rates equal to ``g``.

Taste model (``taste_model``), in the spirit of reciprocal collaborative filtering (Xia et
al.: people who liked the same people share taste; people liked by the same people share
appeal). The signed decision matrix ``M`` (deciders × targets) holds ``+1`` for a like,
``-w`` (``w = pass_weight``) for a pass, ``0`` where no decision was made. A decision's
expected value when a like has probability ``p`` is ``(1 + w) p − w``. The model is the
rates' additive estimate ``p_ab = rate_given_a + rate_received_b − g`` (how readily the
viewer says yes, moved by how sought-after the target is), on that scale, plus a
low-rank correction fitted to what the rates leave unexplained::

    α_u = (1 + w)(rate_given_u − g/2) − w/2      β_t = (1 + w)(rate_received_t − g/2) − w/2
    R_ut = M_ut − α_u − β_t  on decided cells (0 elsewhere)
    R ≈ U S Vᵀ (rank k = dim − 2),  S' = max(S − λ, 0)  (singular-value soft threshold:
                                     least squares plus λ × the nuclear norm)
    taste_u  = [R[u, :] V diag(√S' / S),  α_u,  1]
    appeal_t = [R[:, t]ᵀ U diag(√S' / S), 1,  β_t]

so ``taste_a · appeal_b = α_a + β_b + (low-rank R)_ab`` is the model's estimate of a's
decision about b: near 1 for a likely like, near ``-w`` for a likely pass. The rates
(computed here for every decider and target, active or not, exactly as
:func:`like_behaviour` does) carry who is picky and who is sought after, which a low rank
cannot hold when the population falls apart into many groups that never meet (each would
need its own component); the components carry whose taste resembles whose. Both vectors
are products of the user's own row (column) with the fitted basis, so two users with the
same decisions get bit-identical vectors. Components are sorted by singular value and each
one's sign is fixed (the largest-magnitude entry of its ``V`` column is positive), so the
basis does not flip between runs; missing rank (fewer users than ``k``, or ``S ≤ λ``) is
zero-padded.

How much the components are shrunk, ``λ``, is either a number (``regularisation``) or
chosen from the decisions themselves (``regularisation="auto"``, :func:`choose_threshold`):
a seeded share (:data:`HOLDOUT_SHARE`) of the decided cells is held out, the rates and
``R`` are recomputed from the rest, and for each ``r`` the first ``r`` components
(soft-thresholded at the next singular value) are judged by the share of the held-out
cells' residual variance they explain, at their best scale (a fit that treats undecided
cells as 0 shrinks every prediction by about the matrix's density). The best ``r`` is
kept only if its share beats chance: n held-out cells times the share of a prediction
unrelated to them is χ²₁, and the best of the ``r`` tried must pass its 95 % point
(Bonferroni over the tries: about 8.5 / n for 14 components). The full fit then keeps
``r`` components with ``λ`` its (r + 1)-th singular value.
``r = 0`` is the rates alone, which is what a population whose decisions show no taste
beyond who is picky and who is sought after gets. With fewer than :data:`MIN_HELD_OUT`
held-out cells there is nothing to judge components by, and none is kept.

Every valid decision enters the fit, but only users with at least ``min_decisions``
decisions *given* get a taste vector (``too_few_decisions_given``) and only users with at
least ``min_decisions`` decisions *received* get an appeal vector
(``too_few_decisions_received``); for the others a signal built on them is neutral.

Matrices with at most ``dense_max_cells`` cells (or too small for the requested rank) use
LAPACK's dense SVD; larger ones ``scipy.sparse.linalg.svds`` (ARPACK), started from a vector
drawn from the caller's ``rng``, so the same inputs and seed give the same vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse
import scipy.sparse.linalg
import scipy.stats

from compute import validate

DECISION_KINDS = ("like", "pass", "block")
DECISION_ROW_REASONS = ("unknown_kind", "unknown_user", "self_decision", "duplicate_decision")
VECTOR_USER_REASONS = ("too_few_decisions_given", "too_few_decisions_received")
# Up to 4M cells (32 MB as float64) the exact dense SVD is cheaper than ARPACK.
DENSE_MAX_CELLS = 4_000_000
# The last two coordinates of every taste and appeal vector carry the like rates.
RATE_COORDINATES = 2
# Singular values below this fraction of the largest are rounding noise, not taste.
_RANK_TOLERANCE = 1e-10
# regularisation="auto" (choose_threshold): the share of decided cells held out, the
# fewest held-out cells worth judging components by, and the chance the kept components'
# explained share may have of being luck.
AUTO = "auto"
HOLDOUT_SHARE = 0.2
MIN_HELD_OUT = 100
CHANCE_P = 0.05


@dataclass(frozen=True)
class LikeParams:
    """Tunable parameters of the likes job (filled from YAML by the jobs layer).

    Attributes
    ----------
    dim : int ≥ 2
        Length of every taste and appeal vector: ``dim − 2`` fitted components, then the
        two coordinates that carry the like rates (module docstring).
    min_decisions : int ≥ 1
        Likes + passes a user must have given (for taste) or received (for appeal).
    prior_weight : float ≥ 0
        ``m``, pseudo-decisions at the global like rate in both shrunk rates.
    pass_weight : float > 0
        How strongly a pass counts against (a like counts +1).
    regularisation : float ≥ 0 or "auto"
        ``λ``, subtracted from every singular value (floored at 0); ``"auto"``: chosen on
        held-out decisions (module docstring).
    """

    dim: int
    min_decisions: int
    prior_weight: float
    pass_weight: float
    regularisation: float | str

    def __post_init__(self) -> None:
        for name, least in (("dim", RATE_COORDINATES), ("min_decisions", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
                raise ValueError(f"{name} must be an int ≥ {least}; got {value!r}")
        if isinstance(self.regularisation, str) and self.regularisation != AUTO:
            raise ValueError(
                f"regularisation must be a number ≥ 0 or {AUTO!r}; got {self.regularisation!r}"
            )
        for name, positive in (
            ("prior_weight", False),
            ("pass_weight", True),
            ("regularisation", False),
        ):
            value = getattr(self, name)
            if value == AUTO and name == "regularisation":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name} must be a number; got {value!r}")
            if not np.isfinite(value) or value < 0 or (positive and value == 0):
                bound = "> 0" if positive else "≥ 0"
                raise ValueError(f"{name} must be finite and {bound}; got {value!r}")


@dataclass(frozen=True, eq=False)
class Decisions:
    """Valid decisions (result of :func:`validate_decisions`).

    Attributes
    ----------
    user_ids, target_ids : (d,) int64
        Decider and target of each like or pass.
    is_like : (d,) bool
        True for a like, False for a pass.
    n_blocks : int
        Valid blocks, set aside (not taste evidence).
    skipped : dict[str, int]
        Rows per reason in ``DECISION_ROW_REASONS``.
    """

    user_ids: npt.NDArray[np.int64]
    target_ids: npt.NDArray[np.int64]
    is_like: npt.NDArray[np.bool_]
    n_blocks: int
    skipped: dict[str, int]


def validate_decisions(
    user_ids: npt.NDArray[np.int64],
    target_ids: npt.NDArray[np.int64],
    kinds: npt.NDArray[np.str_] | npt.NDArray[np.object_],
    known_user_ids: npt.NDArray[np.int64],
) -> Decisions:
    """Skip and count bad decision rows; keep likes and passes, count blocks.

    Parameters
    ----------
    user_ids, target_ids : (n,) int64
    kinds : (n,) str or object
        ``"like"``, ``"pass"`` or ``"block"``.
    known_user_ids : (k,) int64
        Every user id that exists, active or not (any order, repeats allowed).

    Returns
    -------
    Decisions
    """
    user_ids = validate.as_ids("user_ids", user_ids)
    target_ids = validate.as_ids("target_ids", target_ids)
    if not isinstance(kinds, np.ndarray) or kinds.ndim != 1 or kinds.dtype.kind not in "UO":
        raise TypeError(f"kinds must be a 1-D str or object array; got {_describe(kinds)}")
    n_rows = validate.check_same_length(user_ids=user_ids, target_ids=target_ids, kinds=kinds)
    known = np.unique(validate.as_ids("known_user_ids", known_user_ids))
    kind_text = kinds.astype(str)
    user_pos, user_known = validate.lookup(known, user_ids)
    target_pos, target_known = validate.lookup(known, target_ids)
    reasons = [
        ("unknown_kind", ~np.isin(kind_text, DECISION_KINDS)),
        ("unknown_user", ~(user_known & target_known)),
        ("self_decision", user_ids == target_ids),
    ]
    candidates = validate.keep_mask(n_rows, reasons)
    keys = user_pos * np.int64(max(len(known), 1)) + target_pos
    duplicate = validate.duplicate_mask(keys, candidates, keep="last")
    reasons.append(("duplicate_decision", duplicate))
    keep = candidates & ~duplicate
    block = keep & (kind_text == "block")
    taste = keep & ~block
    return Decisions(
        user_ids=user_ids[taste].copy(),
        target_ids=target_ids[taste].copy(),
        is_like=kind_text[taste] == "like",
        n_blocks=int(block.sum()),
        skipped=validate.classify_rows(n_rows, reasons),
    )


@dataclass(frozen=True, eq=False)
class LikeBehaviour:
    """Per-user like rates and counts (result of :func:`like_behaviour`).

    Attributes
    ----------
    user_ids : (n,) int64
        As requested.
    decisions_given, likes_given, decisions_received, likes_received : (n,) int64
    rate_given, rate_received : (n,) float64 in [0, 1]
        Shrunk rates (module docstring).
    global_rate : float
        ``g``.
    n_blocks : int
        Blocks set aside (copied from the decisions).
    """

    user_ids: npt.NDArray[np.int64]
    decisions_given: npt.NDArray[np.int64]
    likes_given: npt.NDArray[np.int64]
    decisions_received: npt.NDArray[np.int64]
    likes_received: npt.NDArray[np.int64]
    rate_given: npt.NDArray[np.float64]
    rate_received: npt.NDArray[np.float64]
    global_rate: float
    n_blocks: int


def _counts(
    user_ids: npt.NDArray[np.int64], ids: npt.NDArray[np.int64], is_like: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Decisions and likes counted for each of ``user_ids`` (rows whose id is in ``ids``)."""
    order = np.argsort(user_ids, kind="stable")
    pos, found = validate.lookup(user_ids[order], ids)
    rows = order[pos[found]]
    n = len(user_ids)
    decisions = np.bincount(rows, minlength=n).astype(np.int64)
    likes = np.bincount(rows[is_like[found]], minlength=n).astype(np.int64)
    return decisions, likes


def _global_rate(decisions: Decisions) -> float:
    """``g``: the share of likes among all likes and passes (0.5 when there are none)."""
    n_total = len(decisions.is_like)
    return float(decisions.is_like.sum() / n_total) if n_total else 0.5


def _shrunk(
    likes: npt.NDArray[np.int64], total: npt.NDArray[np.int64], m: float, global_rate: float
) -> npt.NDArray[np.float64]:
    """``(likes + m g) / (total + m)``; ``g`` where ``total + m`` is 0 (m = 0, no decision)."""
    denominators = total + m
    safe = np.where(denominators > 0, denominators, 1.0)
    return np.where(denominators > 0, (likes + m * global_rate) / safe, global_rate)


def like_behaviour(
    user_ids: npt.NDArray[np.int64], decisions: Decisions, params: LikeParams
) -> LikeBehaviour:
    """Counts and shrunk like rates, given and received, for the requested users.

    Parameters
    ----------
    user_ids : (n,) int64, unique
        Users to report, in output order. ``g`` is over *all* decisions, not only theirs.
    decisions : Decisions
    params : LikeParams

    Returns
    -------
    LikeBehaviour
    """
    user_ids = validate.as_ids("user_ids", user_ids)
    validate.check_unique("user_ids", user_ids)
    global_rate = _global_rate(decisions)
    given, liked = _counts(user_ids, decisions.user_ids, decisions.is_like)
    received, liked_by = _counts(user_ids, decisions.target_ids, decisions.is_like)
    m = float(params.prior_weight)
    return LikeBehaviour(
        user_ids=user_ids.copy(),
        decisions_given=given,
        likes_given=liked,
        decisions_received=received,
        likes_received=liked_by,
        rate_given=_shrunk(liked, given, m, global_rate),
        rate_received=_shrunk(liked_by, received, m, global_rate),
        global_rate=global_rate,
        n_blocks=decisions.n_blocks,
    )


@dataclass(frozen=True, eq=False)
class TasteVectors:
    """Result of :func:`taste_model`.

    Attributes
    ----------
    user_ids : (r,) int64
        Requested users with at least one of the two vectors, in the order requested.
    taste, appeal : (r, dim) float32
        NaN rows where the user has no such vector (too few decisions); finite otherwise.
    has_taste, has_appeal : (r,) bool
    decisions_given, decisions_received : (r,) int64
    singular_values : (dim − 2,) float64
        ``S'`` (after the soft threshold), descending, zero-padded.
    regularisation : float
        The ``λ`` applied (``inf``: no component kept).
    threshold : ThresholdChoice or None
        How ``λ`` was chosen under ``regularisation="auto"``; None when it was given.
    skipped : dict[str, int]
        Requested users per reason in ``VECTOR_USER_REASONS`` (a user without either vector
        counts under both).
    """

    user_ids: npt.NDArray[np.int64]
    taste: npt.NDArray[np.float32]
    appeal: npt.NDArray[np.float32]
    has_taste: npt.NDArray[np.bool_]
    has_appeal: npt.NDArray[np.bool_]
    decisions_given: npt.NDArray[np.int64]
    decisions_received: npt.NDArray[np.int64]
    singular_values: npt.NDArray[np.float64]
    regularisation: float
    threshold: ThresholdChoice | None
    skipped: dict[str, int]


def signed_matrix(
    decisions: Decisions, pass_weight: float
) -> tuple[scipy.sparse.csr_array, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The signed decider × target matrix ``M`` and the ids of its rows and columns.

    Returns
    -------
    matrix : (n_deciders, n_targets) float64 CSR, canonical (sorted indices, no duplicates)
        ``+1`` like, ``-pass_weight`` pass.
    decider_ids : (n_deciders,) int64, sorted
    target_ids : (n_targets,) int64, sorted
    """
    decider_ids, rows = np.unique(decisions.user_ids, return_inverse=True)
    target_ids, cols = np.unique(decisions.target_ids, return_inverse=True)
    values = np.where(decisions.is_like, 1.0, -float(pass_weight))
    matrix = scipy.sparse.csr_array(
        (values, (rows.reshape(-1), cols.reshape(-1))),
        shape=(len(decider_ids), len(target_ids)),
    )
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix, decider_ids.astype(np.int64), target_ids.astype(np.int64)


def _rate_residual(
    matrix: scipy.sparse.csr_array, params: LikeParams
) -> tuple[scipy.sparse.csr_array, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(R, α, β)`` of the module docstring for :func:`signed_matrix`'s ``matrix``.

    ``α`` is per matrix row (decider), ``β`` per column (target); ``R`` has ``matrix``'s
    sparsity pattern (a decided cell the rates predict exactly is an explicit 0). ``g`` is
    the matrix's own like share (one cell per decision: :func:`_global_rate`'s).
    """
    w = float(params.pass_weight)
    liked = matrix.data > 0
    g = float(liked.mean()) if matrix.nnz else 0.5
    m = float(params.prior_weight)
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    n_rows, n_cols = matrix.shape
    given = np.bincount(row_of, minlength=n_rows).astype(np.int64)
    likes_given = np.bincount(row_of[liked], minlength=n_rows).astype(np.int64)
    received = np.bincount(matrix.indices, minlength=n_cols).astype(np.int64)
    likes_received = np.bincount(matrix.indices[liked], minlength=n_cols).astype(np.int64)
    alpha = (1.0 + w) * (_shrunk(likes_given, given, m, g) - g / 2) - w / 2
    beta = (1.0 + w) * (_shrunk(likes_received, received, m, g) - g / 2) - w / 2
    residual = matrix.copy()
    residual.data = matrix.data - alpha[row_of] - beta[matrix.indices]
    return residual, alpha, beta


def _truncated_svd(
    matrix: scipy.sparse.csr_array, rank: int, rng: np.random.Generator, dense_max_cells: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Top ``rank`` singular triplets ``(U, S, Vt)``, S descending, signs canonical."""
    n_rows, n_cols = matrix.shape
    smaller = min(n_rows, n_cols)
    if n_rows * n_cols <= dense_max_cells or rank >= smaller:
        u, s, vt = np.linalg.svd(matrix.toarray(), full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    else:
        start = rng.standard_normal(smaller)
        u, s, vt = scipy.sparse.linalg.svds(matrix, k=rank, v0=start, solver="arpack")
        order = np.argsort(-s, kind="stable")
        u, s, vt = u[:, order], s[order], vt[order]
    # One sign per component: the largest-magnitude entry of each Vt row is positive.
    if vt.shape[1]:
        signs = np.sign(vt[np.arange(len(s)), np.argmax(np.abs(vt), axis=1)])
        signs[signs == 0] = 1.0
        u, vt = u * signs, vt * signs[:, None]
    # float64 already (the matrix is): views that tell the checker so.
    return (
        np.asarray(u, dtype=np.float64),
        np.asarray(s, dtype=np.float64),
        np.asarray(vt, dtype=np.float64),
    )


@dataclass(frozen=True)
class ThresholdChoice:
    """How ``regularisation="auto"`` chose ``λ`` (:func:`choose_threshold`).

    Attributes
    ----------
    components : int ≥ 0
        ``r``: the components kept; ``λ`` is the (r + 1)-th singular value of the full
        fit (0 when every component is kept), so 0 keeps none.
    held_out : int
        Decided cells held out (0 when there were too few to judge by).
    explained : tuple of (r, share)
        For each ``r``, the share of the held-out cells' residual variance that ``r``
        components explain (at their best scale); ``r = 0`` explains 0.
    """

    components: int
    held_out: int
    explained: tuple[tuple[int, float], ...]


def choose_threshold(
    matrix: scipy.sparse.csr_array,
    params: LikeParams,
    rng: np.random.Generator,
    dense_max_cells: int = DENSE_MAX_CELLS,
) -> ThresholdChoice:
    """How many components predict held-out decisions (module docstring).

    Parameters
    ----------
    matrix : (deciders, targets) float64 CSR
        :func:`signed_matrix`'s signed decisions.
    params : LikeParams
    rng : np.random.Generator
        Picks the held-out cells (then starts ARPACK on large matrices).
    dense_max_cells : int

    Returns
    -------
    ThresholdChoice
    """
    components = params.dim - RATE_COORDINATES
    held = rng.random(matrix.nnz) < HOLDOUT_SHARE
    n_held = int(held.sum())
    if n_held < MIN_HELD_OUT or components == 0 or n_held == matrix.nnz:
        return ThresholdChoice(components=0, held_out=0, explained=())
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    cols = matrix.indices
    kept = ~held
    train = scipy.sparse.csr_array(
        (matrix.data[kept], (rows[kept], cols[kept])), shape=matrix.shape
    )
    train.sort_indices()
    residual, alpha, beta = _rate_residual(train, params)
    rank = min(components, *train.shape)
    u, s, vt = _truncated_svd(residual, rank, rng, dense_max_cells)
    target = matrix.data[held] - alpha[rows[held]] - beta[cols[held]]
    left, right = u[rows[held]], vt.T[cols[held]]
    variance = float(target @ target)
    explained: list[tuple[int, float]] = [(0, 0.0)]
    for r in range(1, s.size + 1):
        # r components, soft-thresholded at the first one left out (as the full fit is).
        shrunk = np.maximum(s - (s[r] if r < s.size else 0.0), 0.0)
        predicted = np.einsum("ij,j,ij->i", left, shrunk, right)
        # At its best scale c: a fit on the held-in cells treats the undecided ones as 0,
        # which shrinks every prediction by about the matrix's density, so the components
        # are judged by what they explain, 1 − min_c Σ(y − c·p)² / Σy².
        power = float(predicted @ predicted)
        share = float(target @ predicted) ** 2 / (power * variance) if power * variance else 0.0
        explained.append((r, share))
    best = max(explained, key=lambda rs: (rs[1], -rs[0]))  # of equal shares, fewer components
    # A prediction unrelated to the decisions still explains n·share ~ χ²₁ of n cells by
    # chance; the best of s.size such tries must beat its 95 % level (Bonferroni).
    chance = float(scipy.stats.chi2.isf(CHANCE_P / max(s.size, 1), 1)) / n_held
    return ThresholdChoice(
        components=best[0] if best[1] > chance else 0,
        held_out=n_held,
        explained=tuple((r, round(share, 6)) for r, share in explained),
    )


def taste_model(
    user_ids: npt.NDArray[np.int64],
    decisions: Decisions,
    params: LikeParams,
    rng: np.random.Generator,
    dense_max_cells: int = DENSE_MAX_CELLS,
) -> TasteVectors:
    """Taste (as the one who likes) and appeal (as the one liked) vectors, one fit for all.

    Parameters
    ----------
    user_ids : (n,) int64, unique
        Users to return vectors for, in output order. The fit uses every decision, also
        those of users not requested (inactive users' decisions are still evidence).
    decisions : Decisions
    params : LikeParams
    rng : np.random.Generator
        Starts ARPACK on large matrices (the dense path draws nothing).
    dense_max_cells : int
        Largest matrix (rows × columns) solved by the dense SVD.

    Returns
    -------
    TasteVectors
        Formulas in the module docstring.
    """
    user_ids = validate.as_ids("user_ids", user_ids)
    validate.check_unique("user_ids", user_ids)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy Generator; got {type(rng).__name__}")
    dim = params.dim
    components = dim - RATE_COORDINATES
    matrix, decider_ids, target_ids = signed_matrix(decisions, params.pass_weight)
    residual, alpha, beta = _rate_residual(matrix, params)
    rank = min(components, *matrix.shape) if matrix.nnz else 0
    singular = np.zeros(components, dtype=np.float64)
    taste_all = np.zeros((len(decider_ids), dim), dtype=np.float64)
    appeal_all = np.zeros((len(target_ids), dim), dtype=np.float64)
    threshold = None
    regularisation = np.inf
    if params.regularisation == AUTO:
        threshold = choose_threshold(matrix, params, rng, dense_max_cells)
        rank = min(rank, threshold.components)  # 0: the rates alone, no SVD to compute
    else:
        regularisation = float(params.regularisation)
    if rank:
        # Under auto, one more singular value than kept: the threshold is the first left out.
        wanted = rank if threshold is None else min(rank + 1, components, *matrix.shape)
        u, s, vt = _truncated_svd(residual, wanted, rng, dense_max_cells)
        if threshold is not None:
            regularisation = float(s[rank]) if s.size > rank else 0.0
            u, s, vt = u[:, :rank], s[:rank], vt[:rank]
        kept = s > max(float(s[0]) * _RANK_TOLERANCE, 0.0)
        shrunk = np.maximum(s - regularisation, 0.0)
        scale = np.where(kept, np.sqrt(shrunk) / np.where(kept, s, 1.0), 0.0)
        # A direction below the rank tolerance is numerical noise: no vector, no value.
        singular[:rank] = np.where(kept, shrunk, 0.0)
        # Products with the user's own row/column: equal decisions give equal bits.
        taste_all[:, :rank] = (residual @ vt.T) * scale
        appeal_all[:, :rank] = (residual.T @ u) * scale
    # taste_a · appeal_b gains α_a · 1 + 1 · β_b.
    taste_all[:, components] = alpha
    taste_all[:, components + 1] = 1.0
    appeal_all[:, components] = 1.0
    appeal_all[:, components + 1] = beta
    given = validate.lookup(decider_ids, user_ids)
    received = validate.lookup(target_ids, user_ids)
    decisions_given = np.zeros(len(user_ids), dtype=np.int64)
    decisions_received = np.zeros(len(user_ids), dtype=np.int64)
    row_counts = np.diff(matrix.indptr).astype(np.int64)
    col_counts = np.bincount(matrix.indices, minlength=len(target_ids)).astype(np.int64)
    if len(decider_ids):
        decisions_given = np.where(given[1], row_counts[given[0]], 0)
    if len(target_ids):
        decisions_received = np.where(received[1], col_counts[received[0]], 0)
    has_taste = decisions_given >= params.min_decisions
    has_appeal = decisions_received >= params.min_decisions
    taste = np.full((len(user_ids), dim), np.nan, dtype=np.float32)
    appeal = np.full((len(user_ids), dim), np.nan, dtype=np.float32)
    taste[has_taste] = taste_all[given[0][has_taste]]
    appeal[has_appeal] = appeal_all[received[0][has_appeal]]
    emitted = has_taste | has_appeal
    return TasteVectors(
        user_ids=user_ids[emitted].copy(),
        taste=np.ascontiguousarray(taste[emitted]),
        appeal=np.ascontiguousarray(appeal[emitted]),
        has_taste=has_taste[emitted],
        has_appeal=has_appeal[emitted],
        decisions_given=decisions_given[emitted],
        decisions_received=decisions_received[emitted],
        singular_values=singular,
        regularisation=float(regularisation),
        threshold=threshold,
        skipped={
            "too_few_decisions_given": int((~has_taste).sum()),
            "too_few_decisions_received": int((~has_appeal).sum()),
        },
    )


def _describe(value: object) -> object:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} dtype {value.dtype}"
    return type(value).__name__
