"""Feed job: 'match' cards for new mutual matches and for suggestions above a threshold.

Scope: all users, or the listed users' own feeds. Writes only ``feed_cards``. A card is
created once per (user, other user, cause, algorithm version) and never rewritten, so a
rerun adds nothing; ``match_scores`` stays the only matchmaking truth and the client never
invents cards.
"""

from __future__ import annotations

from jobs.context import JobContext, JobResult, Scope
from jobs.storage import feed as feed_storage


def run(ctx: JobContext, scope: Scope) -> JobResult:
    with ctx.figures.phase("write"):
        created = feed_storage.insert_new_cards(
            ctx.session.connection(),
            version=ctx.config.algorithm_version,
            threshold=ctx.config.feed.score_threshold,
            now=ctx.now,
            user_ids=scope.ids_array(),
        )
    ctx.logger.info(
        "feed: %d mutual-match cards, %d high-score cards",
        created["mutual_match"],
        created["high_score"],
        extra={"action": "feed.write", **created},
    )
    return JobResult(rows_written=sum(created.values()), extra={"cards_created": created})
