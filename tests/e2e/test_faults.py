"""The fault suite's small scenarios (jobs/tools/faults), in the normal suite.

Each runs real processes (the CLI's match job, a real Ray in one of them) against a real
PostgreSQL, injects its fault, and checks the invariants of issue 9 with independent SQL
(jobs/storage/invariants.py) plus the reader's bad reads: every count must be zero.
``scripts/faults`` runs the same scenarios larger and writes RELIABILITY.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobs.tools.faults import scenarios
from jobs.tools.faults import world as world_mod

pytestmark = [pytest.mark.faults, pytest.mark.postgres, pytest.mark.slow]

NO_RAY = {"ray": {"enabled": False, "shard_size": 40}}


@pytest.fixture
def make_world(pg_db: Any, tmp_path: Path) -> Iterator[Callable[..., world_mod.World]]:
    """``make_world(**config_sections)``: the seeded world, with a served set to read."""
    made: list[world_mod.World] = []

    def build(**sections: Any) -> world_mod.World:
        world = world_mod.prepare(pg_db.url, tmp_path / "world", n_users=150, seed=5, **sections)
        made.append(world)
        world_mod.publish_baseline(world)
        return world

    yield build
    world_mod.stop_all()
    for world in made:
        world.engine.dispose()


def _assert_clean(figures: dict[str, Any]) -> None:
    assert figures["violations"] == 0, figures


def test_a_run_paused_past_its_lease_writes_nothing_after_another_took_over(
    make_world: Callable[..., world_mod.World],
) -> None:
    """Regression (issue 9, fencing): a nightly SIGSTOPped before its stage existed, then
    abandoned and replaced, resumed, dropped its successor's stage as a leftover and swapped
    in its own set; nor did its end overwrite ``abandoned``. Now every publish and the
    ledger's finish check the run is still ``running``."""
    world = make_world(**NO_RAY)
    figures = scenarios.pause_past_lease(world, "start")
    assert figures["paused_run_status"] == "abandoned"
    assert "LeaseLostError" in figures["paused_log"]
    _assert_clean(figures)


def test_blocks_deactivations_and_filter_changes_during_a_nightly_are_never_served(
    make_world: Callable[..., world_mod.World],
) -> None:
    world = make_world(**NO_RAY)
    figures = scenarios.exclusions_during_nightly(world, changes=15, seed=3)
    assert sum(figures["changes"].values()) > 0
    _assert_clean(figures)


def test_ten_launchers_released_at_once_start_exactly_one_run(
    make_world: Callable[..., world_mod.World],
) -> None:
    world = make_world(**NO_RAY)
    figures = scenarios.launcher_storm(world, launchers=10, rounds=3)
    assert figures["winners_per_round"] == [1]
    _assert_clean(figures)


def test_a_sigkilled_ray_driver_is_detected_and_the_rerun_serves_a_whole_set(
    make_world: Callable[..., world_mod.World],
) -> None:
    world = make_world()
    figures = scenarios.kill_driver(world, clean_s=0.0)
    assert figures["killed_run"] > 0 and figures["rerun_exit_code"] == 0
    with world.engine.connect() as conn:
        stages = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%stage%'")
        ).scalar_one()
    assert stages == 0
    _assert_clean(figures)


def test_a_worker_sigkilled_mid_batch_loses_no_event_and_a_sigterm_finishes_its_batch(
    make_world: Callable[..., world_mod.World],
) -> None:
    world = make_world(**NO_RAY)
    figures = scenarios.kill_worker(world, trials=2, events_per_trial=10, seed=1)
    assert figures["events_by_status"]["unfinished"] == 0
    _assert_clean(figures)
