"""The interest job: ``user_interests`` → ``user_interest_index`` and ``user_interest_vectors``.

Scope ``all``: every active user; both tables are synchronised as a whole, so rows of users
who became inactive or were deleted go. Scope ``users``: the listed active users get their
index rows and vector recomputed; listed users that are inactive, deleted or left without a
valid interest lose their rows.

IDF and single-user runs. A vector weighs each interest by its IDF over the whole active
population, so a single-user run cannot look at that user alone. It recomputes the scope
users' normalized index rows, merges them with the *stored* ``user_interest_index`` entries
of every other active user (entries of interests no longer in the catalogue dropped, as the
batch would drop them), counts users per interest on that merge, and writes only the scope
users' rows. Given a stored index as fresh as the source tables, that is exactly the
population the batch counts, so the single-user row equals the batch row byte for byte.

The trade-off: when one user's interests change, the IDF of the interests they added or
dropped shifts slightly for everyone (and the population size ``N`` for everyone when
they gain their first or lose their last interest). The event path refreshes only that
user's vector; the other users' vectors keep the previous IDF until the nightly batch
recomputes them all. The shift per event is ``O(1/df)``, far below what moves a neighbour
list, and recomputing every vector on every event would make the event path as costly as
the batch. The exact overlap used for scoring and reasons comes from the index, which is
always current for the users an event touched.

Writes only ``user_interest_index`` and ``user_interest_vectors``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute import interests
from jobs.context import JobContext, JobResult, Scope
from jobs.storage import schema, signals

USER_INTEREST_COLUMNS = ("user_id", "interest_id", "weight")


def run(ctx: JobContext, scope: Scope) -> JobResult:
    """Recompute interest index rows and vectors for ``scope`` (all active users, or the listed).

    Writes ``user_interest_index`` and ``user_interest_vectors`` only, the scope's rows.
    """
    conn = ctx.session.connection()
    figures = ctx.figures
    scope_ids = scope.ids_array()
    config = ctx.config.interests
    with figures.phase("load"):
        user_ids = signals.active_user_ids(conn, scope_ids)
        catalogue_rows = signals.read(conn, schema.interests, columns=("id", "subject_id"))
        raw = signals.read(
            conn, schema.user_interests, "user_id", scope_ids, columns=USER_INTEREST_COLUMNS
        )
        # Rows of inactive or deleted users are out of scope: not validated, not counted.
        raw = raw[raw["user_id"].isin(user_ids)]
        others: tuple[pd.DataFrame, int] | None = None
        if config.idf and scope_ids is not None:
            others = signals.interest_document_frequency(conn, scope_ids)
    with figures.phase("compute"):
        catalogue = interests.InterestCatalogue(
            interest_ids=catalogue_rows["id"].to_numpy(dtype=np.int64),
            subject_ids=catalogue_rows["subject_id"].to_numpy(dtype=np.int64),
        )
        params = interests.InterestParams(
            dim=config.dim, projection_seed=config.projection_seed, use_idf=config.idf
        )
        normalized = interests.normalize_interests(
            raw["user_id"].to_numpy(dtype=np.int64),
            raw["interest_id"].to_numpy(dtype=np.int64),
            raw["weight"].to_numpy(dtype=np.float64),
            catalogue,
        )
        index = interests.InterestIndex.from_rows(
            normalized.user_ids, normalized.interest_ids, normalized.subject_ids, normalized.weights
        )
        idf = None
        if config.idf:
            df, n_users = interests.document_frequency(index, catalogue)
            if others is not None:
                # the scope's fresh counts plus everyone else's stored ones = the batch's
                other_df, other_users = others
                where = pd.Index(catalogue.interest_ids).get_indexer(other_df["interest_id"])
                np.add.at(df, where[where >= 0], other_df["df"].to_numpy(np.int64)[where >= 0])
                n_users += other_users
            idf = interests.idf_from_counts(df, n_users)
        vectors = interests.interest_vectors(user_ids, index, catalogue, params, idf)
        index_frame = pd.DataFrame(
            {
                "user_id": normalized.user_ids,
                "interest_id": normalized.interest_ids,
                "subject_id": normalized.subject_ids,
                "weight": normalized.weights,
                "updated_at": signals.stamps(len(normalized.user_ids), ctx.now),
            }
        )
        vector_frame = signals.vector_rows(
            schema.user_interest_vectors,
            vectors.user_ids,
            vectors.vectors,
            vectors.n_interests,
            ctx.now,
        )
    skipped = _merge_counts(normalized.skipped, vectors.skipped)
    figures.skip(skipped, ctx.logger, "interests.skip")
    with figures.phase("write"):
        index_changes = signals.sync(
            conn, schema.user_interest_index, index_frame, scope_ids, "user_id"
        )
        vector_changes = signals.sync(
            conn, schema.user_interest_vectors, vector_frame, scope_ids, "user_id"
        )
    changes = {
        schema.user_interest_index.name: index_changes,
        schema.user_interest_vectors.name: vector_changes,
    }
    ctx.logger.info(
        "interest vectors for %d of %d users: %s",
        len(vectors.user_ids),
        len(user_ids),
        changes,
        extra={"action": "interests.write", "changes": changes},
    )
    rows_read = len(catalogue_rows) + len(raw) + (0 if others is None else len(others[0]))
    return JobResult(
        rows_read=rows_read,
        rows_written=sum(c["inserted"] + c["updated"] + c["deleted"] for c in changes.values()),
        users=len(user_ids),
        skipped=skipped,
        extra={
            "writes": changes,
            "index_rows": len(index_frame),
            "vectors": len(vectors.user_ids),
            "idf_population": "batch" if others is None else "stored_index",
        },
    )


def _merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for part in counts:
        for reason, n in part.items():
            merged[reason] = merged.get(reason, 0) + int(n)
    return merged
