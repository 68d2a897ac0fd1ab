"""The likes job: ``likes`` → ``user_like_behaviour`` and ``user_taste_vectors``.

Scope ``all`` only. Both outputs are one fit over the whole population: the like rates
shrink towards the global like rate, and the taste and appeal vectors come from one
factorisation of the liker × liked matrix, whose basis is shared by every user's vectors
(``compute.likes``). A row computed for one user alone would sit in another basis than the
stored rows of everyone else, so a user scope is refused; both tables are synchronised as a
whole (rows of users who became inactive or were deleted go).

Read: every like and pass (blocks are counted and set aside: a block is a safety statement
about one person, not taste) and the users. Decisions *by* or *about* inactive users still
count, as the ratings job counts their ratings: the opinion was given; only rows about
inactive users are withheld. Every active user gets a ``user_like_behaviour`` row (a user
without decisions has both rates at the global rate); ``user_taste_vectors`` has a row for
each active user with at least ``likes.min_decisions`` decisions given (its ``taste``) or
received (its ``appeal``), the other vector NULL. Users without a vector are counted under
``too_few_decisions_given`` / ``too_few_decisions_received``.

Writes only ``user_like_behaviour`` and ``user_taste_vectors``; a rerun on unchanged input
leaves both byte-identical (``signals.sync`` keeps unchanged rows and their stamps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute import likes
from jobs.context import JobContext, JobResult, Scope
from jobs.errors import ScopeError
from jobs.storage import schema, signals

DECISION_COLUMNS = ("user_id", "target_id", "kind")


def params_from_config(ctx: JobContext) -> likes.LikeParams:
    section = ctx.config.likes
    return likes.LikeParams(
        dim=section.dim,
        min_decisions=section.min_decisions,
        prior_weight=float(section.prior_weight),
        pass_weight=float(section.pass_weight),
        regularisation=(
            section.regularisation
            if section.regularisation == likes.AUTO
            else float(section.regularisation)
        ),
    )


def run(ctx: JobContext, scope: Scope) -> JobResult:
    """Recompute like rates and taste/appeal vectors for every active user.

    Writes ``user_like_behaviour`` and ``user_taste_vectors`` only, each as a whole.
    """
    if not scope.is_all:
        raise ScopeError(
            "the likes job fits one taste model over all users (a single user's vectors "
            f"would not share everyone else's basis); run it for all users, got {scope.label}"
        )
    conn = ctx.session.connection()
    figures = ctx.figures
    with figures.phase("load"):
        user_ids = signals.active_user_ids(conn)
        known_ids = signals.existing_user_ids(conn)
        rows = signals.read(conn, schema.likes, columns=DECISION_COLUMNS)
    with figures.phase("compute"):
        params = params_from_config(ctx)
        decisions = likes.validate_decisions(
            rows["user_id"].to_numpy(dtype=np.int64),
            rows["target_id"].to_numpy(dtype=np.int64),
            rows["kind"].astype(str).to_numpy(),
            known_ids,
        )
        behaviour = likes.like_behaviour(user_ids, decisions, params)
        vectors = likes.taste_model(
            user_ids, decisions, params, np.random.default_rng(ctx.config.likes.seed)
        )
        behaviour_frame = _behaviour_rows(behaviour, ctx)
        vector_frame = _vector_rows(vectors, params.dim, ctx)
    skipped = {**decisions.skipped, **vectors.skipped}
    figures.skip(skipped, ctx.logger, "likes.skip")
    with figures.phase("write"):
        behaviour_changes = signals.sync(
            conn, schema.user_like_behaviour, behaviour_frame, None, "user_id"
        )
        vector_changes = signals.sync(
            conn, schema.user_taste_vectors, vector_frame, None, "user_id"
        )
    changes = {
        schema.user_like_behaviour.name: behaviour_changes,
        schema.user_taste_vectors.name: vector_changes,
    }
    ctx.logger.info(
        "like behaviour for %d users, taste vectors for %d, appeal vectors for %d: %s",
        len(user_ids),
        int(vectors.has_taste.sum()),
        int(vectors.has_appeal.sum()),
        changes,
        extra={"action": "likes.write", "changes": changes},
    )
    return JobResult(
        rows_read=len(rows) + len(known_ids),
        rows_written=sum(c["inserted"] + c["updated"] + c["deleted"] for c in changes.values()),
        users=len(user_ids),
        skipped=skipped,
        extra={
            "writes": changes,
            "decisions": len(decisions.is_like),
            # Blocks are not taste evidence: set aside, counted here.
            "blocks_ignored": decisions.n_blocks,
            "global_like_rate": round(behaviour.global_rate, 6),
            "taste_vectors": int(vectors.has_taste.sum()),
            "appeal_vectors": int(vectors.has_appeal.sum()),
            "dim": params.dim,
            "singular_values": [round(float(s), 6) for s in vectors.singular_values],
            # The λ applied (None: no component kept) and, under "auto", how it was chosen.
            "regularisation": (
                round(vectors.regularisation, 6) if np.isfinite(vectors.regularisation) else None
            ),
            "auto_regularisation": None
            if vectors.threshold is None
            else {
                "components": vectors.threshold.components,
                "held_out_decisions": vectors.threshold.held_out,
                "explained": {str(r): share for r, share in vectors.threshold.explained},
            },
        },
    )


def _behaviour_rows(behaviour: likes.LikeBehaviour, ctx: JobContext) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": behaviour.user_ids,
            "decisions_given": behaviour.decisions_given,
            "likes_given": behaviour.likes_given,
            "decisions_received": behaviour.decisions_received,
            "likes_received": behaviour.likes_received,
            "rate_given": behaviour.rate_given,
            "rate_received": behaviour.rate_received,
            "updated_at": signals.stamps(len(behaviour.user_ids), ctx.now),
        }
    )


def _vector_rows(vectors: likes.TasteVectors, dim: int, ctx: JobContext) -> pd.DataFrame:
    def blobs(values: np.ndarray, present: np.ndarray) -> list[bytes | None]:
        encoded = signals.vectors_to_bytes(np.where(present[:, None], values, 0.0))
        return [blob if keep else None for blob, keep in zip(encoded, present, strict=True)]

    n = len(vectors.user_ids)
    return pd.DataFrame(
        {
            "user_id": vectors.user_ids,
            "dim": np.full(n, dim, dtype=np.int64),
            "taste": pd.Series(blobs(vectors.taste, vectors.has_taste), dtype=object),
            "appeal": pd.Series(blobs(vectors.appeal, vectors.has_appeal), dtype=object),
            "n_given": vectors.decisions_given,
            "n_received": vectors.decisions_received,
            "updated_at": signals.stamps(n, ctx.now),
        }
    )
