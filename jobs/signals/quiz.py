"""The quiz job: answers → one unit-length quiz vector per user in ``user_quiz_vectors``.

Scope ``all``: every active user; the whole table is synchronised, so rows of users who
became inactive or were deleted go. Scope ``users``: the listed users that are active get
their vector recomputed; listed users that are inactive, deleted, or no longer qualify
(too few answers) lose their row. A user's vector depends only on their own answers and the
question catalogue, so a single-user run writes exactly the row a batch run writes.

Writes only ``user_quiz_vectors``.
"""

from __future__ import annotations

import numpy as np

from compute import quiz
from jobs.context import JobContext, JobResult, Scope
from jobs.storage import schema, signals

ANSWER_COLUMNS = ("user_id", "question_id", "value")
# Skip reasons that are the expected state of the data, not a problem: no warning.
EXPECTED_SKIPS = ("inactive_question",)


def run(ctx: JobContext, scope: Scope) -> JobResult:
    """Recompute quiz vectors for ``scope`` (all active users, or the listed ones).

    Writes ``user_quiz_vectors`` only: the scope's rows become exactly the computed set.
    """
    conn = ctx.session.connection()
    figures = ctx.figures
    scope_ids = scope.ids_array()
    with figures.phase("load"):
        user_ids = signals.active_user_ids(conn, scope_ids)
        questions = signals.read(conn, schema.quiz_questions)
        answers = signals.read(
            conn, schema.quiz_answers, "user_id", scope_ids, columns=ANSWER_COLUMNS
        )
        # Answers of inactive or deleted users are out of scope: not validated, not counted.
        answers = answers[answers["user_id"].isin(user_ids)]
    with figures.phase("compute"):
        catalogue = quiz.QuestionCatalogue(
            question_ids=questions["id"].to_numpy(dtype=np.int64),
            scale_min=questions["scale_min"].to_numpy(dtype=np.float64),
            scale_max=questions["scale_max"].to_numpy(dtype=np.float64),
            weights=questions["weight"].to_numpy(dtype=np.float64),
            active=questions["is_active"].to_numpy(dtype=bool),
        )
        params = quiz.QuizParams(min_answers=ctx.config.quiz.min_answers)
        result = quiz.quiz_vectors(
            user_ids,
            answers["user_id"].to_numpy(dtype=np.int64),
            answers["question_id"].to_numpy(dtype=np.int64),
            answers["value"].to_numpy(dtype=np.float64),
            catalogue,
            params,
        )
        frame = signals.vector_rows(
            schema.user_quiz_vectors, result.user_ids, result.vectors, result.n_answers, ctx.now
        )
    # Answers to retired questions are expected (given before the retirement): counted under
    # "ignored", without a warning. Everything else skipped is a data problem worth one.
    skipped = {r: n for r, n in result.skipped.items() if r not in EXPECTED_SKIPS}
    ignored = {r: result.skipped[r] for r in EXPECTED_SKIPS if result.skipped.get(r)}
    figures.skip(skipped, ctx.logger, "quiz.skip")
    if ignored:
        ctx.logger.info(
            "ignored %d answers to retired questions",
            ignored["inactive_question"],
            extra={"action": "quiz.ignored", "ignored": ignored},
        )
    with figures.phase("write"):
        changes = signals.sync(conn, schema.user_quiz_vectors, frame, scope_ids, "user_id")
    ctx.logger.info(
        "quiz vectors for %d of %d users: %s",
        len(result.user_ids),
        len(user_ids),
        changes,
        extra={"action": "quiz.write", **changes},
    )
    return JobResult(
        rows_read=len(questions) + len(answers),
        rows_written=changes["inserted"] + changes["updated"] + changes["deleted"],
        users=len(user_ids),
        skipped=skipped,
        extra={
            "ignored": ignored,
            "writes": {schema.user_quiz_vectors.name: changes},
            "vectors": len(result.user_ids),
            "dim": int(result.vectors.shape[1]),
        },
    )
