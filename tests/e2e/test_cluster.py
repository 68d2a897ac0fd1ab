"""The nightly on a real two-node Ray cluster, submitted exactly as the README says.

Two Ray nodes run as separate processes on this machine (``ray start --head``, then
``ray start --address``), one CPU and a 100 MB object store each, their own temp dirs and
ports, addressed on the loopback only (nodes on 127.0.0.2, the dashboard on 127.0.0.1),
with Ray's token authentication on. The README's
``ray job submit`` block runs unchanged in a shell: it reads the dashboard address and the
token from the environment, as the README tells an operator to set them; the nodes carry
the database URL and a small experiment config in their environment, as a KubeRay pod's
env does (``deploy/``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import make_db

from jobs import config as config_mod
from jobs import runner
from jobs.context import JobContext, JobResult, Scope
from jobs.match import core as match
from jobs.match import nightly as match_nightly
from jobs.storage import ledger, scores, swap

pytestmark = [pytest.mark.cluster, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SEED_NOW = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
N_USERS = 600
# Small shards, so that each node scores many of them and a node lost mid-run leaves work
# behind; half a CPU per actor, so that both fit on the surviving node.
OVERLAY = """\
ray:
  num_actors: 2
  num_cpus_per_actor: 0.5
  shard_size: 20
  max_retries: 3
scoring:
  top_k: 12
audit:
  sample_users: 30
"""
START_TIMEOUT_S = 240
# Loopback, but not 127.0.0.1: `ray start` replaces that by the machine's own address.
NODE_IP = "127.0.0.2"
JOB_TIMEOUT_S = 600


def readme_submit_command() -> str:
    """The README's `ray job submit` block, as text for a shell."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (command,) = [block for block in blocks if "ray job submit" in block]
    return command.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))  # free on every address: Ray binds some ports on all of them
        return int(sock.getsockname()[1])


def node_ports(head: bool) -> list[str]:
    names = [
        "node-manager-port",
        "object-manager-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
    ]
    if head:
        names.append("ray-client-server-port")
    return [f"--{name}={free_port()}" for name in names]


class Cluster:
    """A head and a worker node on the loopback, token auth on; every process is ours.

    Each node's processes inherit ``MJC_NODE=<root>:<name>`` (Ray workers inherit their
    raylet's environment), which is how this finds them to kill: never by name.
    """

    def __init__(self, root: Path, database_url: str, overlay: Path) -> None:
        self.root = root
        self.token_path = root / ".ray" / "auth_token"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MATCHJOBS_"))}
        base.update(
            PATH=f"{BIN}{os.pathsep}{base.get('PATH', '')}",
            HOME=str(root),  # ~/.ray/auth_token of this cluster, not the user's
            RAY_AUTH_MODE="token",
            RAY_USAGE_STATS_ENABLED="0",
        )
        # Ray's own generator writes $HOME/.ray/auth_token.
        subprocess.run(
            [BIN / "ray", "get-auth-token", "--generate"],
            env=base,
            check=True,
            capture_output=True,
            timeout=120,
        )
        base["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        self.base_env = base
        self.node_env = {
            **base,
            "MATCHJOBS_DATABASE_URL": database_url,
            "MATCHJOBS_CONFIG": str(overlay),
            # Notice a lost node within seconds rather than the default half minute.
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.gcs_port = free_port()
        self.dashboard_port = free_port()

    @property
    def submit_env(self) -> dict[str, str]:
        """What the README tells an operator to export before `ray job submit`."""
        return {
            **self.base_env,
            "RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{self.dashboard_port}",
        }

    def start(self) -> None:
        common = [f"--node-ip-address={NODE_IP}", "--num-cpus=1", "--disable-usage-stats"]
        common.append(f"--object-store-memory={100 * 1024 * 1024}")
        self._ray_start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                *node_ports(head=True),
                *common,
            ],
        )
        self._ray_start(
            "worker", [f"--address={NODE_IP}:{self.gcs_port}", *node_ports(head=False), *common]
        )

    def _ray_start(self, name: str, args: list[str]) -> None:
        temp_dir = self.root / name
        temp_dir.mkdir()
        env = {**self.node_env, "MJC_NODE": f"{self.root}:{name}"}
        subprocess.run(
            [BIN / "ray", "start", f"--temp-dir={temp_dir}", *args],
            env=env,
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )

    def ray(self, *args: str) -> str:
        """A `ray` CLI command against this cluster's job API; its output."""
        return subprocess.run(
            [BIN / "ray", *args],
            env=self.submit_env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout

    def alive_nodes(self) -> list[str]:
        address = self.submit_env["RAY_API_SERVER_ADDRESS"]
        out = self.ray(
            "list", "nodes", "--format=json", "--filter=state=ALIVE", "--address", address
        )
        return sorted(node["node_id"] for node in json.loads(out))

    def wait_for_nodes(self, count: int) -> list[str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (nodes := self.alive_nodes()) and len(nodes) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster has {len(nodes)} alive nodes, wanted {count}")
            time.sleep(1)
        return nodes

    def pids(self, name: str | None = None) -> list[int]:
        marker = f"MJC_NODE={self.root}:{name or ''}".encode()
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                environ = (proc / "environ").read_bytes()
            except OSError:
                continue
            if any(item.startswith(marker) for item in environ.split(b"\0")):
                found.append(int(proc.name))
        return found

    def kill(self, name: str | None = None) -> int:
        """SIGKILL every process of node ``name`` (all nodes: None), as a lost machine."""
        pids = self.pids(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def submit(self) -> subprocess.Popen[str]:
        """The README's command, in a shell at the repository root."""
        return subprocess.Popen(
            ["bash", "-c", readme_submit_command()],
            cwd=ROOT,
            env=self.submit_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def job(self, *args: str) -> str:
        return self.ray("job", *args)


@pytest.fixture(scope="module")
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fresh PostgreSQL database with a seeded population (the nightly computes signals)."""
    from jobs.tools import seed as seed_mod

    dbs = make_db("postgres", request, tmp_path_factory.mktemp("cluster-db"))
    db = next(dbs)
    with db.engine.begin() as conn:
        seed_mod.write(conn, seed_mod.generate(N_USERS, 11, SEED_NOW))
    yield db
    next(dbs, None)


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cluster-config") / "cluster.yaml"
    path.write_text(OVERLAY)
    return path


@pytest.fixture(scope="module")
def cluster(world: Any, overlay: Path) -> Iterator[Cluster]:
    # Short: Ray's Unix sockets live under the temp dir, and their paths are limited.
    root = Path(tempfile.mkdtemp(prefix="mjc", dir="/tmp"))
    cluster = Cluster(root, world.url, overlay)
    try:
        cluster.start()
        cluster.wait_for_nodes(2)
        yield cluster
    finally:
        cluster.kill()
        shutil.rmtree(root, ignore_errors=True)


def served(db: Any, config: config_mod.Config) -> pd.DataFrame:
    with db.engine.connect() as conn:
        rows = scores.read_rows(conn, match.settings_from_config(config).version)
    return rows.sort_values(["user_id", "candidate_id"]).reset_index(drop=True)


def single_node_table(db: Any, config: config_mod.Config, now: dt.datetime) -> pd.DataFrame:
    """The same nightly match, in-process on one node, at the cluster run's clock."""
    data = config.model_dump()
    data["ray"] = {**data["ray"], "enabled": False}
    local = config_mod.from_mapping(data, source="single node")

    def job(ctx: JobContext, scope: Scope) -> JobResult:
        return match_nightly.run_nightly(ctx, match.settings_from_config(ctx.config))

    runner.execute(
        "match",
        job,
        engine=db.engine,
        database_url=db.url,
        config=local,
        scope=Scope.all(),
        trigger="on_demand",
        clock=lambda: now,
    )
    return served(db, local)


def assert_same_table(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Same pairs, scores within 1e-6 (and a checksum over both, for the message)."""
    assert len(want) > N_USERS, "the single-node run produced too few rows to compare"
    pairs = ["user_id", "candidate_id"]
    assert got[pairs].equals(want[pairs]), "the cluster's pairs differ from one node's"
    diff = np.abs(got["score"].to_numpy() - want["score"].to_numpy())
    checksum = [round(float(t["score"].sum()), 6) for t in (got, want)]
    assert diff.max() <= 1e-6, f"scores differ by up to {diff.max()} (checksums {checksum})"


def last_match_run(db: Any) -> pd.Series:
    """The last match run over all users (the nightly's backfill runs are for some)."""
    runs = ledger.recent_runs(db.engine, limit=5, job_name="match")
    return runs[runs["scope"] == "all"].iloc[0]


def run_now(db: Any) -> dt.datetime:
    """The clock of the last match run (stamped on its rows as computed_at)."""
    with db.engine.connect() as conn:
        value = conn.execute(sa.text("SELECT max(computed_at) FROM match_scores")).scalar_one()
    stamp = pd.Timestamp(value)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).to_pydatetime()


def plain(text: str) -> str:
    """Ray's CLI output without its terminal colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def submission_id(output: str) -> str:
    match_id = re.search(r"Job '(raysubmit_\w+)' submitted successfully", plain(output))
    assert match_id, f"no submission id in the output of ray job submit:\n{output}"
    return match_id.group(1)


def test_readme_submit_runs_the_nightly_on_both_nodes(cluster: Cluster, world: Any) -> None:
    """Issue 14: `ray job submit` had never run (no ray[default]), and only with token auth
    off could a second node join; the shards of one run must land on both nodes."""
    nodes = cluster.alive_nodes()
    process = cluster.submit()
    output, _ = process.communicate(timeout=JOB_TIMEOUT_S)
    assert process.returncode == 0, output
    job_id = submission_id(output)
    assert "succeeded" in plain(cluster.job("status", job_id)).lower()
    logs = cluster.job("logs", job_id)
    # The driver's own log lines, from the job's record on the cluster.
    assert re.search(r"jobs\.match: run \d+: succeeded", logs), logs

    run = last_match_run(world)
    assert run["status"] in ("succeeded", "succeeded_with_warnings"), run["error"]
    shards = json.loads(run["metadata"])["shards"]
    assert shards["executor"] == "ray"
    assert sorted(shards["nodes"]) == nodes, f"shards ran on {shards['nodes']}, nodes {nodes}"
    assert sum(shards["nodes"].values()) == shards["count"]

    config = config_mod.load_config([cluster.node_env["MATCHJOBS_CONFIG"]])
    on_cluster = served(world, config)
    assert_same_table(on_cluster, single_node_table(world, config, run_now(world)))


def test_a_worker_node_lost_mid_run(cluster: Cluster, world: Any) -> None:
    """Issue 14: a node lost mid-run. The run either finishes on the surviving node with the
    same table, or fails with the previous version still served; which, and how long the
    recovery took, is printed (and `shards.longest_wait_s` is in the run's figures)."""
    config = config_mod.load_config([cluster.node_env["MATCHJOBS_CONFIG"]])
    before = served(world, config)
    before_id = int(last_match_run(world)["id"])
    assert len(cluster.alive_nodes()) == 2

    process = cluster.submit()
    killed_at = None
    deadline = time.monotonic() + JOB_TIMEOUT_S
    # Kill the worker node once the first shard of the new run is in its stage table.
    while killed_at is None and process.poll() is None and time.monotonic() < deadline:
        run = last_match_run(world)
        if int(run["id"]) > before_id and run["status"] == "running":
            stage = swap.stage_name(int(run["id"]))
            with world.engine.connect() as conn:
                exists = conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": stage}).scalar()
                count = sa.text(f'SELECT count(*) FROM "{stage}"')
                rows = conn.execute(count).scalar_one() if exists else 0
            if rows:
                assert cluster.kill("worker") > 0
                killed_at = time.monotonic()
        time.sleep(0.05)
    output, _ = process.communicate(timeout=JOB_TIMEOUT_S)
    assert killed_at is not None, f"the run ended before the worker could be killed:\n{output}"
    ended_s = time.monotonic() - killed_at
    run = last_match_run(world)
    assert int(run["id"]) > before_id

    if process.returncode == 0:
        shards = json.loads(run["metadata"])["shards"]
        assert run["status"] in ("succeeded", "succeeded_with_warnings"), run["error"]
        assert shards["actor_restarts"] >= 1, shards
        assert_same_table(served(world, config), single_node_table(world, config, run_now(world)))
        print(
            f"\nnode lost mid-run: FINISHED on the surviving node, same table; "
            f"longest wait for a shard {shards['longest_wait_s']} s, "
            f"job ended {ended_s:.1f} s after the kill; shards per node {shards['nodes']}"
        )
    else:
        assert "failed" in plain(cluster.job("status", submission_id(output))).lower()
        assert run["status"] == "failed" and run["error"], run
        assert_same_table(served(world, config), before)
        print(
            f"\nnode lost mid-run: FAILED cleanly after {ended_s:.1f} s, the previous "
            f"version still served; error: {run['error']}"
        )
