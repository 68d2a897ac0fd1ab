"""The match score job: signal tables → top-K candidates per user in ``match_scores``.

Scope ``all`` (nightly): :mod:`jobs.match.nightly` loads the active population once,
builds the candidate indexes, cuts the users into shards and scores each shard with its
``ShardScorer`` — on a Ray cluster (``ray.enabled``, the default) or in-process one shard
after another — and publishes the version's whole set at once (PostgreSQL: stage and swap;
SQLite: each shard's users replaced in one transaction). Users who left the population
then lose their rows, and a recall audit compares a seeded sample's kept lists with
exhaustive scoring of every eligible candidate.

Scope ``users`` (events, ``matchjobs score-user``): :mod:`jobs.match.users`, in-process, no
Ray (the event worker passes its warm population, :mod:`jobs.match.warm`). The same
population load, the same deterministic indexes and the same compute code
(:mod:`jobs.match.core`), restricted to the listed users and their candidate region, plus
at most ``fanout.max_reverse`` users whose current list holds one of them; all replaced in
the run's one transaction (the event worker scores that fan-out in a follow-up run, after
the changed users' own lists have committed). Each user's rows equal what the nightly writes
for them.

Imports go one way: ``core`` holds the pieces both paths share; ``users`` and ``nightly``
sit above it; this package's :func:`run` dispatches (and imports Ray only for the nightly).

Writes only ``match_scores``.
"""

from __future__ import annotations

from jobs.context import JobContext, JobResult, Scope
from jobs.match import core, users
from jobs.match.warm import WarmPopulation


def run(
    ctx: JobContext,
    scope: Scope,
    warm: WarmPopulation | None = None,
    fanout: users.Fanout = "inline",
) -> JobResult:
    """Score candidates for the users in ``scope``; replace their ``match_scores`` rows.

    ``warm``: the event worker's held population (:mod:`jobs.match.warm`), for a users
    scope; without it (``score-user``, the backfill) each pass loads its region.
    ``fanout``: for a users scope, when the reverse fan-out is scored (:mod:`jobs.match.users`).
    """
    settings = core.settings_from_config(ctx.config)
    if scope.is_all:
        # Imported here so that the single-user path never imports Ray.
        from jobs.match import nightly

        return nightly.run_nightly(ctx, settings)
    return users.run_users(ctx, scope, settings, warm=warm, fanout=fanout)
