"""The ratings job: ``ratings`` → ``profile_rating_aggregates``, ``profile_rating_standing``
and ``user_rating_preferences``.

Scope ``all``: aggregates for every active profile with a valid rating, preferences for
every active rater with enough of them; both tables are synchronised as a whole, so rows of
users who became inactive or were deleted go. Scope ``users`` (the "new rating" event passes
the rated profile and the rater): each listed active user gets their aggregates recomputed
as a profile and their preference recomputed as a rater; listed users that are inactive,
deleted or no longer qualify lose their rows.

What a single-user run reads, so that it writes exactly the batch's rows:

- **Global means** ``g_d`` (the prior of the shrunk means) are over every valid rating in
  the population. Both modes take them from one grouped query, the count of valid ratings
  per (dimension, value) (``signals.valid_rating_value_counts``): a handful of rows for a
  rating scale instead of every rating, and, summed in (dimension, value) order, bit-identical
  whatever order the database scans in.
- **Leniency** of each rater (how far above the population they rate, which the
  aggregates take out of their ratings, ``compute.ratings.rater_leniency``) is over all the
  rater's valid ratings. A batch run groups the ratings it holds per (rater, dimension,
  value); a users-scope run has the database count them for the raters of the rows it
  read (``signals.valid_rating_values_by_rater``), the same groups in the same order, so the
  sums are bit-identical.
- **Preferences** of a rater covary their likings with the aggregates of the profiles they
  rated. Those aggregates are *recomputed* from the ratings of those profiles (read through
  the ``rated_id`` index; a few hundred rows per rater) rather than taken from the stored
  table: the result does not depend on how fresh the stored aggregates are, and the profile
  the event just rated is included with its new rating.
- Ratings are sorted by their primary key before any sum, so each profile's and each rater's
  rows are added in the same order in both modes.

Ratings *by* users who are inactive (but exist) still count in the aggregates of the
profiles they rated: the opinion was given; only rows about inactive users are withheld.
Preferences use the aggregates of every rated profile, active or not, for the same reason.

What the match job reads is written here, so that it never regroups the raw ratings:
``profile_rating_standing`` holds, per rated profile, the centred standing
``(shrunk mean - g) / range`` per dimension and the quality, both derived with the ``g`` of
the same run. A users-scope run refreshes its profiles' rows only: the others keep the
standing of their last run (the nightly refreshes everyone), so a profile's quality and
centred vector always agree with each other and with its aggregates.

Writes only ``profile_rating_aggregates``, ``profile_rating_standing`` and
``user_rating_preferences``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from compute import ratings
from jobs.context import JobContext, JobResult, Scope
from jobs.storage import schema, signals


def run(ctx: JobContext, scope: Scope) -> JobResult:
    """Recompute aggregates (as profiles) and preferences (as raters) for ``scope``'s users.

    Writes ``profile_rating_aggregates``, ``profile_rating_standing`` and
    ``user_rating_preferences`` only, the scope's rows.
    """
    conn = ctx.session.connection()
    figures = ctx.figures
    scope_ids = scope.ids_array()
    with figures.phase("load"):
        user_ids = signals.active_user_ids(conn, scope_ids)
        dimension_rows = signals.read(
            conn, schema.rating_dimensions, columns=("id", "scale_min", "scale_max")
        )
        if scope_ids is None:
            rows = signals.read_ratings(conn)
            known_ids = signals.existing_user_ids(conn)
        else:
            given = signals.ratings_touching(conn, scope_ids, np.empty(0, dtype=np.int64))
            rated_by_scope = given["rated_id"].to_numpy(dtype=np.int64)
            rows = signals.ratings_touching(conn, scope_ids, np.union1d(scope_ids, rated_by_scope))
            referenced = np.union1d(
                rows["rater_id"].to_numpy(dtype=np.int64),
                rows["rated_id"].to_numpy(dtype=np.int64),
            )
            known_ids = signals.existing_user_ids(conn, referenced)
        value_counts = signals.valid_rating_value_counts(conn)
    with figures.phase("compute"):
        dimensions = ratings.RatingDimensions(
            dimension_ids=dimension_rows["id"].to_numpy(dtype=np.int64),
            scale_min=dimension_rows["scale_min"].to_numpy(dtype=np.float64),
            scale_max=dimension_rows["scale_max"].to_numpy(dtype=np.float64),
        )
        params = ratings.RatingParams(
            prior_weight=float(ctx.config.ratings.prior_weight),
            min_ratings_for_preference=ctx.config.ratings.min_ratings_for_preference,
        )
        valid = ratings.validate_ratings(
            rows["rater_id"].to_numpy(dtype=np.int64),
            rows["rated_id"].to_numpy(dtype=np.int64),
            rows["dimension_id"].to_numpy(dtype=np.int64),
            rows["value"].to_numpy(dtype=np.float64),
            dimensions,
            known_ids,
        )
        global_means = ratings.rating_global_means(_expand(value_counts), dimensions)
    with figures.phase("load"):
        # Leniency: every rater of the loaded rows, over all their ratings (a batch run
        # holds them; a users-scope run counts them per value in the database).
        if scope_ids is None:
            groups = ratings.value_groups(valid)
        else:
            by_rater = signals.valid_rating_values_by_rater(conn, np.unique(valid.rater_ids))
            groups = ratings.ValueGroups(
                rater_ids=by_rater["rater_id"].to_numpy(dtype=np.int64),
                dimension_ids=by_rater["dimension_id"].to_numpy(dtype=np.int64),
                values=by_rater["value"].to_numpy(dtype=np.float64),
                counts=by_rater["n"].to_numpy(dtype=np.int64),
            )
    with figures.phase("compute"):
        leniency = ratings.rater_leniency(groups, dimensions, params, global_means)
        # Every profile in the loaded rows has all its ratings loaded (see the module
        # docstring), so these aggregates are the population's.
        aggregates = ratings.rating_aggregates(
            np.unique(valid.rated_ids),
            ratings.without_leniency(valid, leniency, dimensions),
            dimensions,
            params,
            global_means,
        )
        preferences = ratings.rating_preferences(user_ids, valid, aggregates, dimensions, params)
        aggregate_frame = aggregates.long_rows(dimensions)
        aggregate_frame = aggregate_frame[aggregate_frame["profile_id"].isin(user_ids)]
        aggregate_frame = aggregate_frame.reset_index(drop=True)
        aggregate_frame["updated_at"] = signals.stamps(len(aggregate_frame), ctx.now)
        standing_frame = _standing_rows(aggregates, dimensions, user_ids, ctx.now)
        preference_frame = signals.vector_rows(
            schema.user_rating_preferences,
            preferences.rater_ids,
            preferences.vectors,
            preferences.n_rated,
            ctx.now,
        )
    skipped = {**valid.skipped, **preferences.skipped}
    figures.skip(skipped, ctx.logger, "ratings.skip")
    with figures.phase("write"):
        aggregate_changes = signals.sync(
            conn, schema.profile_rating_aggregates, aggregate_frame, scope_ids, "profile_id"
        )
        standing_changes = signals.sync(
            conn, schema.profile_rating_standing, standing_frame, scope_ids, "profile_id"
        )
        preference_changes = signals.sync(
            conn, schema.user_rating_preferences, preference_frame, scope_ids, "user_id"
        )
    changes = {
        schema.profile_rating_aggregates.name: aggregate_changes,
        schema.profile_rating_standing.name: standing_changes,
        schema.user_rating_preferences.name: preference_changes,
    }
    n_profiles = int(aggregate_frame["profile_id"].nunique())
    ctx.logger.info(
        "rating aggregates for %d profiles, preferences for %d of %d users: %s",
        n_profiles,
        len(preferences.rater_ids),
        len(user_ids),
        changes,
        extra={"action": "ratings.write", "changes": changes},
    )
    return JobResult(
        rows_read=len(dimension_rows) + len(rows) + len(known_ids) + len(value_counts),
        rows_written=sum(c["inserted"] + c["updated"] + c["deleted"] for c in changes.values()),
        users=len(user_ids),
        skipped=skipped,
        extra={
            "writes": changes,
            "ratings": len(rows),
            "valid_ratings": len(valid.values),
            "profiles": n_profiles,
            "preferences": len(preferences.rater_ids),
            "global_means": [round(float(g), 6) for g in global_means],
        },
    )


def _standing_rows(
    aggregates: ratings.RatingAggregates,
    dimensions: ratings.RatingDimensions,
    user_ids: np.ndarray,
    now: object,
) -> pd.DataFrame:
    """``profile_rating_standing`` rows of the aggregated profiles among ``user_ids``."""
    listed = np.isin(aggregates.profile_ids, user_ids)
    centred = aggregates.centred(dimensions)[listed]
    n = int(listed.sum())
    return pd.DataFrame(
        {
            "profile_id": aggregates.profile_ids[listed],
            "dim": np.full(n, centred.shape[1], dtype=np.int64),
            "centred": signals.vectors_to_bytes(centred),
            "quality": aggregates.quality[listed],
            "updated_at": signals.stamps(n, now),
        }
    )


def _expand(value_counts: pd.DataFrame) -> ratings.ValidRatings:
    """Valid ratings as (dimension, value) rows, repeated by count, for the global means.

    Only dimensions and values enter ``g``, so the rater and rated columns are a zero-cost
    placeholder; the rows are already valid (the query applies the validation rules).
    """
    counts = value_counts["n"].to_numpy(dtype=np.int64)
    total = int(counts.sum())
    placeholder = np.broadcast_to(np.int64(0), (total,))
    return ratings.ValidRatings(
        rater_ids=placeholder,
        rated_ids=placeholder,
        dimension_ids=np.repeat(value_counts["dimension_id"].to_numpy(dtype=np.int64), counts),
        values=np.repeat(value_counts["value"].to_numpy(dtype=np.float64), counts),
        skipped={},
    )
