"""Quiz vectors: hand-checked values, bad-row accounting, and NaN-free outputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compute import quiz


def make_catalogue() -> quiz.QuestionCatalogue:
    # Deliberately unsorted: columns must follow question id, not input order.
    return quiz.QuestionCatalogue(
        question_ids=np.array([2, 1, 3], dtype=np.int64),
        scale_min=np.array([1.0, 1.0, 0.0]),
        scale_max=np.array([5.0, 5.0, 10.0]),
        weights=np.array([1.0, 2.0, 1.0]),
        active=np.array([True, True, False]),
    )


def run(
    users: list[int],
    answer_users: list[int],
    questions: list[int],
    values: list[float],
    min_answers: int = 2,
) -> quiz.QuizVectors:
    return quiz.quiz_vectors(
        np.array(users, dtype=np.int64),
        np.array(answer_users, dtype=np.int64),
        np.array(questions, dtype=np.int64),
        np.array(values, dtype=np.float64),
        make_catalogue(),
        quiz.QuizParams(min_answers=min_answers),
    )


def test_vectors_match_hand_computation() -> None:
    # q1: [1, 5], weight 2; q2: [1, 5], weight 1; midpoint 3, half-range 2.
    # user 10: q1=5 -> +1*2 = 2, q2=1 -> -1*1 = -1  => (2, -1)/sqrt(5)
    # user 11: q1=4 -> 0.5*2 = 1, q2=4 -> 0.5     => (1, 0.5)/sqrt(1.25)
    # user 12: q1=2 -> -1, q2=3 -> 0               => (-1, 0)
    result = run(
        [12, 10, 11],
        [10, 10, 11, 11, 12, 12],
        [1, 2, 2, 1, 1, 2],
        [5, 1, 4, 4, 2, 3],
    )
    np.testing.assert_array_equal(result.user_ids, [12, 10, 11])
    np.testing.assert_array_equal(result.question_ids, [1, 2])
    expected = np.array(
        [[-1.0, 0.0], [2 / np.sqrt(5), -1 / np.sqrt(5)], [1 / np.sqrt(1.25), 0.5 / np.sqrt(1.25)]]
    )
    np.testing.assert_allclose(result.vectors, expected, rtol=1e-6)
    assert result.vectors.dtype == np.float32
    assert result.vectors.flags.c_contiguous
    np.testing.assert_array_equal(result.n_answers, [2, 2, 2])
    assert result.n_answers.dtype == np.int32
    assert all(count == 0 for count in result.skipped.values())


def test_missing_answer_is_a_neutral_zero_component() -> None:
    result = run([10], [10], [2], [5.0], min_answers=1)
    np.testing.assert_allclose(result.vectors, [[0.0, 1.0]])


@pytest.mark.parametrize(
    ("question", "value", "reason"),
    [
        (1, float("nan"), "nan_value"),
        (1, float("inf"), "nan_value"),
        (1, float("-inf"), "nan_value"),
        (99, 3.0, "unknown_question"),
        (3, 5.0, "inactive_question"),  # retired, not unknown
        (1, 5.5, "out_of_scale"),
        (1, 0.5, "out_of_scale"),
    ],
)
def test_each_bad_row_is_skipped_and_counted(question: int, value: float, reason: str) -> None:
    result = run([10], [10, 10, 10], [1, 2, question], [5.0, 1.0, value])
    assert result.skipped[reason] == 1
    assert sum(result.skipped.values()) == 1
    np.testing.assert_allclose(result.vectors, [[2 / np.sqrt(5), -1 / np.sqrt(5)]], rtol=1e-6)


def test_duplicate_answer_keeps_the_last_row() -> None:
    result = run([10], [10, 10, 10], [1, 2, 1], [1.0, 1.0, 5.0])
    assert result.skipped["duplicate_answer"] == 1
    np.testing.assert_array_equal(result.n_answers, [2])
    np.testing.assert_allclose(result.vectors, [[2 / np.sqrt(5), -1 / np.sqrt(5)]], rtol=1e-6)


def test_a_bad_row_does_not_count_as_a_duplicate_of_a_good_one() -> None:
    result = run([10], [10, 10, 10], [1, 2, 1], [5.0, 1.0, np.nan])
    assert result.skipped["nan_value"] == 1
    assert result.skipped["duplicate_answer"] == 0


def test_too_few_answers_and_zero_vector_get_no_vector() -> None:
    # user 10: one valid answer (< 2); user 11: both answers at the midpoint.
    result = run([10, 11], [10, 11, 11], [1, 1, 2], [5.0, 3.0, 3.0])
    assert len(result.user_ids) == 0
    assert result.vectors.shape == (0, 2)
    assert result.skipped["too_few_answers"] == 1
    assert result.skipped["zero_vector"] == 1


def test_unrequested_users_are_ignored() -> None:
    result = run([10], [10, 10, 77, 77], [1, 2, 1, 2], [5.0, 1.0, 5.0, 5.0])
    np.testing.assert_array_equal(result.user_ids, [10])
    assert sum(result.skipped.values()) == 0


def test_single_user_run_equals_batch_row() -> None:
    args = ([10, 10, 11, 11, 12], [1, 2, 2, 1, 1], [5, 1, 4, 4, 2])
    batch = run([10, 11, 12], *args, min_answers=1)
    single = run([11], *args, min_answers=1)
    np.testing.assert_array_equal(single.vectors[0], batch.vectors[1])


def test_row_order_does_not_matter() -> None:
    users, questions, values = [10, 10, 11, 11], [1, 2, 2, 1], [5.0, 1.0, 4.0, 2.0]
    order = [3, 1, 0, 2]
    forward = run([10, 11], users, questions, values)
    shuffled = run(
        [10, 11],
        [users[i] for i in order],
        [questions[i] for i in order],
        [values[i] for i in order],
    )
    np.testing.assert_array_equal(forward.vectors, shuffled.vectors)


def test_caller_mistakes_raise_naming_the_argument() -> None:
    catalogue = make_catalogue()
    params = quiz.QuizParams(min_answers=1)
    ids = np.array([10], dtype=np.int64)
    with pytest.raises(TypeError, match="answer_user_ids"):
        quiz.quiz_vectors(ids, np.array([10.0]), ids, np.array([1.0]), catalogue, params)
    with pytest.raises(ValueError, match="same length"):
        quiz.quiz_vectors(ids, ids, np.array([1, 2]), np.array([1.0]), catalogue, params)
    with pytest.raises(ValueError, match="user_ids must be unique"):
        quiz.quiz_vectors(np.array([10, 10]), ids, ids, np.array([1.0]), catalogue, params)
    with pytest.raises(ValueError, match="min_answers"):
        quiz.QuizParams(min_answers=0)
    with pytest.raises(ValueError, match="scale_min < scale_max"):
        quiz.QuestionCatalogue(
            np.array([1]), np.array([3.0]), np.array([3.0]), np.array([1.0]), np.array([True])
        )


answer_rows = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 4),
        st.one_of(
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(0.0, 10.0),
            st.sampled_from([0.0, 5.0, 10.0, 2.5]),
        ),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(
    rows=answer_rows,
    weights=st.lists(st.floats(0.0, 1e300), min_size=4, max_size=4),
    min_answers=st.integers(1, 4),
)
def test_outputs_are_always_finite_unit_vectors(
    rows: list[tuple[int, int, float]], weights: list[float], min_answers: int
) -> None:
    catalogue = quiz.QuestionCatalogue(
        question_ids=np.array([1, 2, 3, 4]),
        scale_min=np.array([0.0, 0.0, 1.0, -1e-300]),
        scale_max=np.array([10.0, 5.0, 2.0, 1e-300]),
        weights=np.array(weights),
        active=np.array([True, True, True, True]),
    )
    result = quiz.quiz_vectors(
        np.arange(6, dtype=np.int64),
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.float64),
        catalogue,
        quiz.QuizParams(min_answers=min_answers),
    )
    assert result.vectors.shape == (len(result.user_ids), 4)
    assert np.all(np.isfinite(result.vectors))
    np.testing.assert_allclose(np.linalg.norm(result.vectors, axis=1), 1.0, rtol=1e-5)
    assert np.all(result.n_answers >= min_answers)
    row_reasons = sum(result.skipped[r] for r in quiz.QUIZ_ROW_REASONS)
    user_reasons = sum(result.skipped[r] for r in quiz.QUIZ_USER_REASONS)
    assert row_reasons + int(result.n_answers.sum()) <= len(rows)
    assert user_reasons + len(result.user_ids) == 6
