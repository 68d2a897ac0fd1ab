"""The worker's plan for a batch: coalescing and which users each job refreshes."""

from __future__ import annotations

from jobs.storage.events import Event
from jobs.worker import plan_batch


def ev(id_: int, kind: str, user: int, other: int | None = None) -> Event:
    return Event(id=id_, kind=kind, user_id=user, other_user_id=other, attempts=1)


def test_duplicates_coalesce_and_rating_touches_both_sides() -> None:
    plan = plan_batch(
        [
            ev(1, "quiz_submitted", 7),
            ev(2, "quiz_submitted", 7),
            ev(3, "interests_changed", 8),
            ev(4, "rating_created", 9, 10),
            ev(5, "rating_created", 9, 10),
            ev(6, "user_changed", 11),
        ]
    )
    assert plan.kept_ids == (1, 3, 4, 6)
    assert plan.coalesced_ids == (2, 5)
    assert plan.signal_users == {"quiz": (7,), "interests": (8,), "ratings": (9, 10)}
    assert plan.match_users == (7, 8, 9, 10, 11)


def test_user_changed_needs_no_signal_job() -> None:
    plan = plan_batch([ev(1, "user_changed", 3)])
    assert plan.signal_users == {}
    assert plan.match_users == (3,)
