"""The database schema, as SQLAlchemy Core tables (the migrations create exactly this).

Source tables are written by the app; jobs only read them. Each derived table has exactly
one writer job (see ``DERIVED_OWNERS``). Conventions:

- ids are 64-bit integers; timestamps are UTC (``timestamptz`` on PostgreSQL).
- ``users.gender`` is a code: 0 woman, 1 man, 2 nonbinary. ``users.seeking_mask`` has bit
  ``g`` set when the user seeks gender ``g`` (1 = women, 2 = men, 4 = nonbinary people).
- CHECK constraints refuse the values no job could honour (migration 0006): codes and
  masks out of range, ages outside 18..120, impossible coordinates, a negative or
  non-finite distance limit, non-finite answers and ratings, subscores outside [0, 1].
- Vectors are stored as little-endian float32 bytes (``vector``) with their ``dim``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC timestamp on both engines (SQLite stores naive UTC text)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}: {value!r}")
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: matchjobs stores UTC-aware times only")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


def _ts(name: str, nullable: bool = False, **kw: Any) -> sa.Column[Any]:
    return sa.Column(name, UTCDateTime(), nullable=nullable, **kw)


# ---------------------------------------------------------------- source tables (app-owned)

# A CHECK condition's suffix that refuses ±inf and NaN on both engines (NULL passes): NaN is
# above every number on PostgreSQL, and SQLite stores NaN as NULL.
FINITE = "BETWEEN -1e308 AND 1e308"

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("birth_date", sa.Date, nullable=True),
    sa.Column("gender", sa.SmallInteger, nullable=True),
    sa.Column("seeking_mask", sa.SmallInteger, nullable=False),
    sa.Column("age_min", sa.SmallInteger, nullable=False, server_default="18"),
    sa.Column("age_max", sa.SmallInteger, nullable=False, server_default="99"),
    sa.Column("max_distance_km", sa.Float, nullable=True),
    sa.Column("latitude", sa.Float, nullable=True),
    sa.Column("longitude", sa.Float, nullable=True),
    sa.Column("city", sa.Text, nullable=True),
    _ts("created_at"),
    _ts("last_active_at", nullable=True),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("display_name", sa.Text, nullable=True),
    # The app's values (migration 0006); NULL stays allowed where the column allows it.
    sa.CheckConstraint("gender BETWEEN 0 AND 2", name="gender"),
    sa.CheckConstraint("seeking_mask BETWEEN 1 AND 7", name="seeking_mask"),
    sa.CheckConstraint("age_min BETWEEN 18 AND 120", name="age_min"),
    sa.CheckConstraint("age_max BETWEEN 18 AND 120", name="age_max"),
    sa.CheckConstraint("age_min <= age_max", name="age_range"),
    sa.CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude"),
    sa.CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude"),
    sa.CheckConstraint("(latitude IS NULL) = (longitude IS NULL)", name="location_pair"),
    # Finite: NaN is above every number on PostgreSQL, +inf above 1e308.
    sa.CheckConstraint("max_distance_km >= 0 AND max_distance_km <= 1e308", name="max_distance_km"),
)
sa.Index("ix_users_active", users.c.is_active)

quiz_questions = sa.Table(
    "quiz_questions",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("scale_min", sa.Float, nullable=False),
    sa.Column("scale_max", sa.Float, nullable=False),
    sa.Column("weight", sa.Float, nullable=False, server_default="1"),
    sa.Column("is_active", sa.Boolean, nullable=False, server_default=sa.true()),
)

quiz_answers = sa.Table(
    "quiz_answers",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("question_id", sa.BigInteger, primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
    _ts("answered_at"),
    sa.CheckConstraint(f"value {FINITE}", name="value_finite"),
)

subjects = sa.Table(
    "subjects",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False, unique=True),
)

interests = sa.Table(
    "interests",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("subject_id", sa.BigInteger, sa.ForeignKey("subjects.id"), nullable=False),
    sa.Column("name", sa.Text, nullable=False),
)

user_interests = sa.Table(
    "user_interests",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("interest_id", sa.BigInteger, primary_key=True),
    # Strength of the interest on the app's 1-10 slider; NULL = plain "interested".
    sa.Column("weight", sa.Float, nullable=True),
    _ts("created_at"),
)

rating_dimensions = sa.Table(
    "rating_dimensions",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("scale_min", sa.Float, nullable=False),
    sa.Column("scale_max", sa.Float, nullable=False),
)

ratings = sa.Table(
    "ratings",
    metadata,
    sa.Column("rater_id", sa.BigInteger, primary_key=True),
    sa.Column("rated_id", sa.BigInteger, primary_key=True),
    sa.Column("dimension_id", sa.BigInteger, primary_key=True),
    sa.Column("value", sa.Float, nullable=True),
    _ts("created_at"),
    sa.CheckConstraint(f"value {FINITE}", name="value_finite"),
)
sa.Index("ix_ratings_rated_id", ratings.c.rated_id)

likes = sa.Table(
    "likes",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("target_id", sa.BigInteger, primary_key=True),
    sa.Column("kind", sa.String(8), nullable=False),
    _ts("created_at"),
    sa.CheckConstraint("kind IN ('like', 'pass', 'block')", name="kind"),
)
sa.Index("ix_likes_target_id", likes.c.target_id)

# ---------------------------------------------------------------- derived tables (job-owned)

user_quiz_vectors = sa.Table(
    "user_quiz_vectors",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("n_answers", sa.Integer, nullable=False),
    _ts("updated_at"),
)

user_interest_index = sa.Table(
    "user_interest_index",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True),
    sa.Column("interest_id", sa.BigInteger, primary_key=True),
    sa.Column("subject_id", sa.BigInteger, nullable=False),
    sa.Column("weight", sa.Float, nullable=False),
    _ts("updated_at"),
)

user_interest_vectors = sa.Table(
    "user_interest_vectors",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("n_interests", sa.Integer, nullable=False),
    _ts("updated_at"),
)

# Per rated profile and dimension: how many valid ratings, their mean and shrunk mean, each
# rating taken less its rater's leniency (compute.ratings.rater_leniency).
profile_rating_aggregates = sa.Table(
    "profile_rating_aggregates",
    metadata,
    sa.Column("profile_id", sa.BigInteger, primary_key=True),
    sa.Column("dimension_id", sa.BigInteger, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("mean", sa.Float, nullable=False),
    sa.Column("shrunk_mean", sa.Float, nullable=False),
    _ts("updated_at"),
)

# Where each rated profile stands, as the ratings job derived it from its aggregates and
# the population's global means of that run (migration 0014): what the match job reads, so it
# never regroups the raw ratings. ``centred`` is (shrunk mean - global mean) / range per
# dimension (float32 blob, dimensions by id), ``quality`` the mean standing in [0, 1].
profile_rating_standing = sa.Table(
    "profile_rating_standing",
    metadata,
    sa.Column("profile_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("centred", sa.LargeBinary, nullable=False),
    sa.Column("quality", sa.Float, nullable=False),
    _ts("updated_at"),
)

user_rating_preferences = sa.Table(
    "user_rating_preferences",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
    sa.Column("n_ratings", sa.Integer, nullable=False),
    _ts("updated_at"),
)

# The likes job (``jobs.signals.likes``): behaviour from likes and passes (blocks are not taste).
user_like_behaviour = sa.Table(
    "user_like_behaviour",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("decisions_given", sa.Integer, nullable=False),
    sa.Column("likes_given", sa.Integer, nullable=False),
    sa.Column("decisions_received", sa.Integer, nullable=False),
    sa.Column("likes_received", sa.Integer, nullable=False),
    # Shrunk to the global like rate (likes.prior_weight pseudo-decisions).
    sa.Column("rate_given", sa.Float, nullable=False),
    sa.Column("rate_received", sa.Float, nullable=False),
    _ts("updated_at"),
)

# Taste (as the one who likes) and appeal (as the one liked): NULL when the user has too
# few decisions given (taste) or received (appeal); a row has at least one of the two.
user_taste_vectors = sa.Table(
    "user_taste_vectors",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("taste", sa.LargeBinary, nullable=True),
    sa.Column("appeal", sa.LargeBinary, nullable=True),
    sa.Column("n_given", sa.Integer, nullable=False),
    sa.Column("n_received", sa.Integer, nullable=False),
    _ts("updated_at"),
)

SUBSCORE_COLUMNS = (
    "quiz",
    "interests",
    "rating_quality",
    "rating_fit",
    "newness",
    "proximity",
    "appeal",
    "reciprocity",
)

match_scores = sa.Table(
    "match_scores",
    metadata,
    # Columns in physical order, widest alignment first (migration 0014): 8-byte fields,
    # then 4-byte ones, then the short version text, so no byte of a row is padding.
    sa.Column("user_id", sa.BigInteger, nullable=False, autoincrement=False),
    sa.Column("candidate_id", sa.BigInteger, nullable=False, autoincrement=False),
    # The row's reasons: the id of their JSON text in reason_patterns (a content digest).
    sa.Column("reason_id", sa.BigInteger, nullable=False),
    _ts("computed_at"),
    # float4: the scorer computes score and subscores in float32, so nothing is lost.
    sa.Column("score", sa.REAL, nullable=False),
    # Subscores, one column per signal (each in [0, 1]): cheaper to COPY than a JSON blob.
    *(sa.Column(f"s_{name}", sa.REAL, nullable=False) for name in SUBSCORE_COLUMNS),
    sa.Column("algorithm_version", sa.String(64), nullable=False),
    # NaN > every number on PostgreSQL and is stored as NULL on SQLite: both are refused.
    sa.CheckConstraint("score >= 0 AND score <= 1", name="score_range"),
    *(
        sa.CheckConstraint(f"s_{name} >= 0 AND s_{name} <= 1", name=f"s_{name}_range")
        for name in SUBSCORE_COLUMNS
    ),
    # Integer columns lead every key (migration 0004): the nightly sorts 18M rows per
    # index, and a leading text column sends each comparison through the collation. The
    # version must be in the key of a table partitioned by it; it comes last.
    sa.PrimaryKeyConstraint("user_id", "candidate_id", "algorithm_version"),
    # PostgreSQL: one partition per version that the nightly has swapped in, plus
    # match_scores_default (migration 0003); see jobs.storage.scores.
    postgresql_partition_by="LIST (algorithm_version)",
)
# Partitions of match_scores are managed by the match job, not by the models.
PARTITION_PREFIX = "match_scores_"
# The reverse lookup (who lists a candidate): within a version's partition the version is
# constant, so it is left out. The API's read is a range of the primary key, which leads
# with user_id (migration 0015 dropped the (user_id, score DESC) index: 31.5 bytes a row).
sa.Index("ix_match_scores_reverse", match_scores.c.candidate_id)

# The distinct reason lists of match_scores: the JSON text (an array of {"code", "params",
# "text"}) once per pattern, keyed by a 64-bit digest of that text, so every writer knows a
# pattern's id without asking the database (jobs.storage.scores.reason_ids). Append-only:
# a pattern no row holds any more costs its few bytes, and deleting one could race a writer
# about to reference it.
reason_patterns = sa.Table(
    "reason_patterns",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("reasons", sa.Text, nullable=False),
)

# One row per algorithm version: the scoring hash every one of its match_scores rows carries
# (the match job refuses to write a version under another hash unless told to replace it).
algorithm_versions = sa.Table(
    "algorithm_versions",
    metadata,
    sa.Column("algorithm_version", sa.String(64), primary_key=True),
    sa.Column("scoring_hash", sa.String(16), nullable=False),
    _ts("first_written_at"),
    _ts("hash_set_at"),
    # When the nightly last swapped in the version's partition (PostgreSQL; migration 0012):
    # storage.keep_versions keeps the partitions of the most recently swapped versions.
    _ts("swapped_at", nullable=True),
)

feed_cards = sa.Table(
    "feed_cards",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("other_user_id", sa.BigInteger, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False, server_default="match"),
    # 'mutual_match', 'high_score' or 'conversation_revived'
    sa.Column("cause", sa.String(32), nullable=False),
    sa.Column("algorithm_version", sa.String(64), nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    # JSON, one shape for every cause: {"cause": ..., "reasons": [{"code", "text", ...}]}
    sa.Column("reason", sa.Text, nullable=True),
    _ts("created_at"),
    sa.UniqueConstraint("user_id", "other_user_id", "kind", "cause", "algorithm_version"),
)

# What the match job knows of a user's set beyond its rows (migration 0010):
# 'stale'  — the set is known to be out of date (a reverse fan-out past fanout.max_reverse);
#            the nightly's backfill takes these users first;
# 'empty'  — the user was scored at marked_at and had no candidate at all; the backfill
#            skips them until their signals change or an event rescored them.
# Written only by the match job; a rewrite of the user's set replaces the mark.
match_set_states = sa.Table(
    "match_set_states",
    metadata,
    sa.Column("algorithm_version", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("state", sa.String(8), nullable=False),
    sa.Column("reason", sa.String(32), nullable=True),
    _ts("marked_at"),
    sa.CheckConstraint("state IN ('stale', 'empty')", name="state"),
)

# ---------------------------------------------------------------- operations

job_runs = sa.Table(
    "job_runs",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("job_name", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("scope", sa.String(128), nullable=False),
    _ts("started_at"),
    _ts("finished_at", nullable=True),
    sa.Column("duration_ms", sa.BigInteger, nullable=True),
    sa.Column("algorithm_version", sa.String(64), nullable=False),
    sa.Column("config_hash", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("metadata", sa.Text, nullable=False, server_default="{}"),
    _ts("heartbeat_at"),
    sa.CheckConstraint(
        "status IN ('running', 'succeeded', 'succeeded_with_warnings', 'failed', 'abandoned')",
        name="status",
    ),
    sa.CheckConstraint(
        "\"trigger\" IN ('nightly', 'event', 'on_demand', 'backfill')", name="trigger"
    ),
)
# The database itself guarantees one running run per (job, scope).
sa.Index(
    "ux_job_runs_one_running",
    job_runs.c.job_name,
    job_runs.c.scope,
    unique=True,
    postgresql_where=job_runs.c.status == "running",
    sqlite_where=job_runs.c.status == "running",
)
sa.Index("ix_job_runs_job_started", job_runs.c.job_name, job_runs.c.started_at)

EVENT_KINDS = (
    "quiz_submitted",
    "interests_changed",
    "rating_created",
    "user_changed",
    "like_created",
    "profile_updated",
    "user_deactivated",
    "conversation_revived",
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigIntId, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    # rating_created: the rated profile; like_created: the liked / passed / blocked user;
    # conversation_revived: the other side of the conversation.
    sa.Column("other_user_id", sa.BigInteger, nullable=True),
    sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    _ts("created_at"),
    # Set when a worker claims the event. The claim belongs to the worker's batch run
    # (job_runs.id in claim_run_id): it is handed out again once that run is no longer
    # running or its heartbeat is older than the lease (without a run: once claimed_at is).
    _ts("claimed_at", nullable=True),
    sa.Column("claim_run_id", sa.BigInteger, nullable=True),
    # Not handed out before this time: the backoff after a failure or a deferral.
    _ts("not_before", nullable=True),
    # Times the event was handed back unprocessed because its work was already running.
    sa.Column("deferrals", sa.Integer, nullable=False, server_default="0"),
    _ts("processed_at", nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.CheckConstraint(
        "status IN ('pending', 'processing', 'done', 'coalesced', 'dead')", name="status"
    ),
    sa.CheckConstraint(
        "kind IN (" + ", ".join(f"'{k}'" for k in EVENT_KINDS) + ")",
        name="kind",
    ),
)
sa.Index("ix_events_status_id", events.c.status, events.c.id)

SOURCE_TABLES = (
    users,
    quiz_questions,
    quiz_answers,
    subjects,
    interests,
    user_interests,
    rating_dimensions,
    ratings,
    likes,
)

# job name -> the tables only that job writes
DERIVED_OWNERS: dict[str, tuple[sa.Table, ...]] = {
    "quiz": (user_quiz_vectors,),
    "interests": (user_interest_index, user_interest_vectors),
    "ratings": (profile_rating_aggregates, profile_rating_standing, user_rating_preferences),
    "likes": (user_like_behaviour, user_taste_vectors),
    "match": (match_scores, reason_patterns, algorithm_versions, match_set_states),
    "feed": (feed_cards,),
}
