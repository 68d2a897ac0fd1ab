"""Quiz vectors: one fixed-dimension, unit-length vector of answers per user.

Formula, for user ``u`` and active question ``q`` (columns ordered by question id)::

    mid_q  = (scale_min_q + scale_max_q) / 2
    half_q = (scale_max_q - scale_min_q) / 2
    x_uq   = weight_q * (value_uq - mid_q) / half_q     if u answered q validly
    x_uq   = 0                                          otherwise (neutral)
    v_u    = x_u / ||x_u||_2

so each unweighted component lies in ``[-1, 1]`` before normalization. A user
with fewer than ``min_answers`` valid answers gets no vector
(``too_few_answers``); a user whose ``x_u`` is all zero (every answer at its
scale midpoint, or only zero-weight questions) gets no vector either
(``zero_vector``): it has no direction, and inventing one would be noise.

Bad answer rows are skipped and counted, each under the first reason that
applies, in this order: ``nan_value`` (NaN or ±inf), ``unknown_question``
(not in the catalogue), ``inactive_question`` (a retired question: its answers are
expected and not a data error), ``out_of_scale`` (outside
``[scale_min, scale_max]``), ``duplicate_answer`` (a second valid row for the
same (user, question): the **last** row in input order is kept, so a caller
that orders answers by time keeps the most recent answer).

Answers from users not listed in ``user_ids`` are out of scope and ignored
without being counted: a single-user run passes one id and need not
pre-filter its rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compute import validate

QUIZ_ROW_REASONS = (
    "nan_value",
    "unknown_question",
    "inactive_question",
    "out_of_scale",
    "duplicate_answer",
)
QUIZ_USER_REASONS = ("too_few_answers", "zero_vector")


@dataclass(frozen=True)
class QuizParams:
    """Tunable quiz-vector parameters (filled from YAML by the jobs layer).

    Attributes
    ----------
    min_answers : int
        A user needs at least this many valid answers to get a vector; >= 1.
    """

    min_answers: int

    def __post_init__(self) -> None:
        if isinstance(self.min_answers, bool) or not isinstance(self.min_answers, int):
            raise TypeError(f"min_answers must be an int; got {self.min_answers!r}")
        if self.min_answers < 1:
            raise ValueError(f"min_answers must be >= 1; got {self.min_answers}")


@dataclass(frozen=True, eq=False)
class QuestionCatalogue:
    """The quiz questions, stored sorted by question id (input order does not matter).

    Attributes
    ----------
    question_ids : (k,) int64, unique
    scale_min, scale_max : (k,) float64, finite, ``scale_min < scale_max``
    weights : (k,) float64, finite, >= 0
    active : (k,) bool
        Only active questions get a vector component; answers to inactive ones
        are counted as ``inactive_question``.

    A contradictory catalogue (repeated id, empty or non-finite scale, negative
    weight) raises ``ValueError``: it is configuration, not a user's row.
    """

    question_ids: npt.NDArray[np.int64]
    scale_min: npt.NDArray[np.float64]
    scale_max: npt.NDArray[np.float64]
    weights: npt.NDArray[np.float64]
    active: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        question_ids = validate.as_ids("question_ids", self.question_ids)
        scale_min = validate.as_floats("scale_min", self.scale_min)
        scale_max = validate.as_floats("scale_max", self.scale_max)
        weights = validate.as_floats("weights", self.weights)
        active = validate.as_bools("active", self.active)
        validate.check_same_length(
            question_ids=question_ids,
            scale_min=scale_min,
            scale_max=scale_max,
            weights=weights,
            active=active,
        )
        validate.check_unique("question_ids", question_ids)
        finite = np.isfinite(scale_min) & np.isfinite(scale_max)
        bad_scale = ~finite | ~(scale_min < scale_max)
        if bad_scale.any():
            i = int(np.flatnonzero(bad_scale)[0])
            raise ValueError(
                "question scales must be finite with scale_min < scale_max; got "
                f"[{scale_min[i]}, {scale_max[i]}] for question {question_ids[i]}"
            )
        bad_weight = ~np.isfinite(weights) | (weights < 0)
        if bad_weight.any():
            i = int(np.flatnonzero(bad_weight)[0])
            raise ValueError(
                f"question weights must be finite and >= 0; got {weights[i]} "
                f"for question {question_ids[i]}"
            )
        order = np.argsort(question_ids, kind="stable")
        object.__setattr__(self, "question_ids", question_ids[order])
        object.__setattr__(self, "scale_min", scale_min[order])
        object.__setattr__(self, "scale_max", scale_max[order])
        object.__setattr__(self, "weights", weights[order])
        object.__setattr__(self, "active", active[order])

    @property
    def active_question_ids(self) -> npt.NDArray[np.int64]:
        """(dim,) int64: the question id behind each vector column, ascending."""
        return self.question_ids[self.active]


@dataclass(frozen=True, eq=False)
class QuizVectors:
    """Result of :func:`quiz_vectors`.

    Attributes
    ----------
    user_ids : (m,) int64
        Users that got a vector, in the order they were requested.
    vectors : (m, dim) float32, C-contiguous, unit L2 norm, finite
    n_answers : (m,) int32
        Valid answers behind each vector.
    question_ids : (dim,) int64
        The active question behind each column, ascending.
    skipped : dict[str, int]
        Always has every key of ``QUIZ_ROW_REASONS`` (counts of answer rows) and
        ``QUIZ_USER_REASONS`` (counts of requested users).
    """

    user_ids: npt.NDArray[np.int64]
    vectors: npt.NDArray[np.float32]
    n_answers: npt.NDArray[np.int32]
    question_ids: npt.NDArray[np.int64]
    skipped: dict[str, int]


def validate_answers(
    answer_user_ids: npt.NDArray[np.int64],
    question_ids: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    catalogue: QuestionCatalogue,
) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """Keep-mask and per-reason counts for raw answer rows.

    Parameters
    ----------
    answer_user_ids, question_ids : (n,) int64
    values : (n,) float64
    catalogue : QuestionCatalogue

    Returns
    -------
    keep : (n,) bool
        Rows that pass every check (one per (user, question), the last one).
    skipped : dict[str, int]
        Count per reason in ``QUIZ_ROW_REASONS``; each row counted once.
    """
    answer_user_ids = validate.as_ids("answer_user_ids", answer_user_ids)
    question_ids = validate.as_ids("question_ids", question_ids)
    values = validate.as_floats("values", values)
    n_rows = validate.check_same_length(
        answer_user_ids=answer_user_ids, question_ids=question_ids, values=values
    )
    question_pos, found = validate.lookup(catalogue.question_ids, question_ids)
    nan_value = ~np.isfinite(values)
    unknown = ~found
    inactive = found & ~catalogue.active[question_pos]
    # Comparisons with NaN are False, so NaN rows never count as out_of_scale twice.
    out_of_scale = (values < catalogue.scale_min[question_pos]) | (
        values > catalogue.scale_max[question_pos]
    )
    reasons = [
        ("nan_value", nan_value),
        ("unknown_question", unknown),
        ("inactive_question", inactive),
        ("out_of_scale", out_of_scale),
    ]
    candidates = validate.keep_mask(n_rows, reasons)
    _, user_codes = np.unique(answer_user_ids, return_inverse=True)
    keys = user_codes.astype(np.int64) * max(len(catalogue.question_ids), 1) + question_pos
    duplicate = validate.duplicate_mask(keys, candidates, keep="last")
    reasons.append(("duplicate_answer", duplicate))
    return candidates & ~duplicate, validate.classify_rows(n_rows, reasons)


def quiz_vectors(
    user_ids: npt.NDArray[np.int64],
    answer_user_ids: npt.NDArray[np.int64],
    question_ids: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    catalogue: QuestionCatalogue,
    params: QuizParams,
) -> QuizVectors:
    """Build one unit-length quiz vector per requested user (formula in the module docstring).

    Parameters
    ----------
    user_ids : (u,) int64, unique
        Users to produce vectors for; output keeps this order.
    answer_user_ids, question_ids : (n,) int64
        One row per answer.
    values : (n,) float64
        The answer on its question's scale.
    catalogue : QuestionCatalogue
    params : QuizParams

    Returns
    -------
    QuizVectors
        ``vectors`` is ``(m, dim)`` float32 with ``dim`` = number of active
        questions and ``m <= u``; only finite values.

    Raises
    ------
    TypeError, ValueError
        On wrong dtypes, mismatched lengths or repeated ``user_ids``.
    """
    if not isinstance(catalogue, QuestionCatalogue):
        raise TypeError(f"catalogue must be a QuestionCatalogue; got {type(catalogue).__name__}")
    if not isinstance(params, QuizParams):
        raise TypeError(f"params must be QuizParams; got {type(params).__name__}")
    user_ids = validate.as_ids("user_ids", user_ids)
    validate.check_unique("user_ids", user_ids)
    answer_user_ids = validate.as_ids("answer_user_ids", answer_user_ids)
    question_ids = validate.as_ids("question_ids", question_ids)
    values = validate.as_floats("values", values)
    keep, skipped = validate_answers(answer_user_ids, question_ids, values, catalogue)

    # Column of each active question; inactive questions never survive validation.
    column_of = np.cumsum(catalogue.active) - 1
    dim = int(catalogue.active.sum())
    user_order = np.argsort(user_ids, kind="stable")
    sorted_user_ids = user_ids[user_order]
    user_pos, in_scope = validate.lookup(sorted_user_ids, answer_user_ids)
    keep &= in_scope

    question_pos, _ = validate.lookup(catalogue.question_ids, question_ids[keep])
    mid = (catalogue.scale_min + catalogue.scale_max) / 2.0
    half = (catalogue.scale_max - catalogue.scale_min) / 2.0
    scaled = (values[keep] - mid[question_pos]) / half[question_pos]
    # Guard against rounding pushing an in-scale answer a hair past ±1.
    components = np.clip(scaled, -1.0, 1.0) * catalogue.weights[question_pos]

    rows = user_order[user_pos[keep]]  # row in the requested order
    dense = np.zeros((len(user_ids), dim), dtype=np.float64)
    # Validation left at most one answer per (user, question): plain assignment is exact.
    dense[rows, column_of[question_pos]] = components
    n_answers = np.bincount(rows, minlength=len(user_ids))

    enough = n_answers >= params.min_answers
    normalized, nonzero = validate.l2_normalize_rows(dense)
    emitted = enough & nonzero
    skipped["too_few_answers"] = int((~enough).sum())
    skipped["zero_vector"] = int((enough & ~nonzero).sum())
    return QuizVectors(
        user_ids=user_ids[emitted].copy(),
        vectors=np.ascontiguousarray(normalized[emitted], dtype=np.float32),
        n_answers=n_answers[emitted].astype(np.int32),
        question_ids=catalogue.active_question_ids.copy(),
        skipped=skipped,
    )
