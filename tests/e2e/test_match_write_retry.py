"""A shard's write that loses its database connection is retried; exhausted retries fail
cleanly.

Regression (issue 9, item 5): a connection cut mid-COPY failed the whole nightly (safely:
old version served, stage dropped) without a retry of the shard, printed a raw
``RayTaskError`` traceback, and left ANSI escape codes in ``job_runs.error``.

The cut is real: the actors reach PostgreSQL through a TCP proxy on loopback that closes a
connection at a chosen point of the COPY transaction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from jobs import cli, runner
from jobs import config as config_mod
from jobs.context import Scope
from jobs.storage import ledger, scores

NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
OVERRIDES: dict[str, dict[str, Any]] = {
    "candidates": {"quiz_k": 30, "interest_k": 30, "fallback_k": 30},
    "scoring": {"top_k": 12},
    "audit": {"sample_users": 20},
    "ray": {"enabled": True, "shard_size": 60, "num_actors": 2, "num_cpus_per_actor": 0.5},
    "retry": {"write_attempts": 3, "backoff_s": 0.05, "max_backoff_s": 0.2},
}

pytestmark = pytest.mark.ray


class CuttingProxy:
    """Relays TCP to PostgreSQL; cuts up to ``cuts`` connections in a COPY transaction.

    ``at="copy"``: right after forwarding the ``COPY … FROM STDIN`` statement (the server
    aborts the transaction). ``at="commit"``: after the server has answered that
    transaction's COMMIT, before the client hears it — the commit happened, the client
    cannot know. Connections without a COPY pass untouched. TLS must be off (the proxy
    reads the statements).
    """

    def __init__(self, upstream: tuple[str, int], at: str, cuts: int) -> None:
        self.upstream = upstream
        self.at = at
        self.cuts_left = cuts
        self.cuts_made = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, database: str) -> str:
        return (
            f"postgresql://postgres@127.0.0.1:{self.port}/{database}"
            "?sslmode=disable&gssencmode=disable"
        )

    def close(self) -> None:
        """Stop listening and close every relayed connection (none is left to the GC)."""
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _close(sock)

    def _take_cut(self) -> bool:
        with self._lock:
            if self.cuts_left == 0:
                return False
            self.cuts_left -= 1
            self.cuts_made += 1
            return True

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        server = socket.create_connection(self.upstream)
        with self._lock:
            self._sockets += [client, server]
        cut_on_reply = threading.Event()

        def cut() -> None:
            _close(client)
            _close(server)

        def replies() -> None:
            while True:
                try:
                    data = server.recv(65536)
                except OSError:
                    cut()
                    return
                if not data or cut_on_reply.is_set():
                    cut()
                    return
                try:
                    client.sendall(data)
                except OSError:
                    cut()
                    return

        threading.Thread(target=replies, daemon=True).start()
        in_copy = False
        tail = b""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                cut()
                return
            if not data:
                cut()
                return
            window = tail + data
            tail = window[-16:]
            # The statement itself, not a parameter quoting it (an error text in job_runs).
            if not in_copy and data[:1] in (b"Q", b"P") and b'COPY "' in data[:48]:
                in_copy = True
                if self.at == "copy" and self._take_cut():
                    server.sendall(data)
                    cut()
                    return
            elif in_copy and b"COMMIT" in window:
                in_copy = False
                if self.at == "commit" and self._take_cut():
                    cut_on_reply.set()
            try:
                server.sendall(data)
            except OSError:
                cut()
                return


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def make_config(**sections: dict[str, Any]) -> config_mod.Config:
    data = config_mod.load_config().model_dump()
    for name, values in {**OVERRIDES, **sections}.items():
        data[name] = {**data[name], **values}
    return config_mod.from_mapping(data, source="test")


def run_match(db: Any, url: str, config: config_mod.Config) -> Any:
    return runner.execute(
        "match",
        runner.job_function("match"),
        engine=db.engine,
        database_url=url,
        config=config,
        scope=Scope.all(),
        trigger="nightly",
        clock=lambda: NOW,
    )


def stored(db: Any) -> pd.DataFrame:
    with db.engine.connect() as conn:
        return scores.read_rows(conn, "v1").drop(columns="computed_at")


def last_run(db: Any) -> tuple[Any, dict[str, Any]]:
    row = ledger.recent_runs(db.engine, limit=1, job_name="match").iloc[0]
    return row, json.loads(row["metadata"])


@pytest.fixture
def world(pg_db: Any, seed_with_signals: Any) -> Any:
    seed_with_signals(pg_db, 200, 11, NOW)
    return pg_db


def proxy_for(db: Any, at: str, cuts: int) -> CuttingProxy:
    url = sa.engine.make_url(db.url)
    return CuttingProxy((url.host or "127.0.0.1", url.port or 5432), at, cuts)


@pytest.mark.parametrize("at", ["copy", "commit"])
def test_a_cut_write_is_retried_and_the_rows_equal_a_clean_run(
    world: Any, ray_cluster: None, at: str
) -> None:
    # "commit" pins the rewrite: the first attempt's rows are in the stage, and a retry
    # that appended again would make the swap's primary key fail on duplicates.
    run_match(world, world.url, make_config())
    clean = stored(world)
    proxy = proxy_for(world, at, cuts=1)
    try:
        run_match(world, proxy.url(sa.engine.make_url(world.url).database), make_config())
    finally:
        proxy.close()
    assert proxy.cuts_made == 1
    row, meta = last_run(world)
    assert row["status"] == "succeeded"
    assert meta["shards"]["write_retries"] == 1
    assert meta["funnel"]["rows_written"] == len(clean)
    pd.testing.assert_frame_equal(stored(world), clean)


def test_exhausted_retries_fail_cleanly_with_one_plain_line(
    world: Any, ray_cluster: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_match(world, world.url, make_config())
    before = stored(world)
    proxy = proxy_for(world, "copy", cuts=-1)  # every COPY is cut
    config_file = tmp_path / "exp.yaml"
    config_file.write_text(yaml.safe_dump(OVERRIDES))
    database = sa.engine.make_url(world.url).database
    capsys.readouterr()
    try:
        code = cli.main(["--db", proxy.url(database), "--config", str(config_file), "run", "match"])
    finally:
        proxy.close()
    assert code == 1
    assert proxy.cuts_made >= OVERRIDES["retry"]["write_attempts"]
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("matchjobs: error: StorageError: write of shard")
    assert "after 3 attempts" in lines[0]
    assert "\x1b" not in lines[0] and "Traceback" not in lines[0]
    row, _ = last_run(world)
    assert row["status"] == "failed"
    error = row["error"]
    assert "\x1b" not in error and "ray::" not in error and "Traceback" not in error
    # The chain survives the trip from the actor: down to the driver's own words.
    assert error.splitlines()[0].startswith("StorageError: write of shard")
    assert "caused by StorageError: write" in error
    assert "caused by OperationalError:" in error
    # Old version still served, stage dropped.
    pd.testing.assert_frame_equal(stored(world), before)
    with world.engine.connect() as conn:
        stages = conn.execute(
            sa.text("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%stage%'")
        ).scalar_one()
    assert stages == 0
