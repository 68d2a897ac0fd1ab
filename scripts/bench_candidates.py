"""Benchmark candidate generation: exact blocked ranking against FAISS neighbour lists.

    .venv/bin/python scripts/bench_candidates.py --users 100000 [--cities realistic dense]

For each city layout (``jobs.tools.seed.city_layout``): seeds ``--users`` users (seed 1) into a
scratch database (PostgreSQL ``mj_bench_candidates``, or SQLite files under ``--sqlite-dir``),
runs the four signal jobs in a child process, loads the population as the match job does and
drops the database; everything after that is in memory, through ``compute.candidates`` with
the default config's settings except:

- ``exact``: ``exact_below`` = 10⁹, every user ranked exactly (dense blocks);
- ``ivf nprobe=P``: ``exact_below`` = 1, every user from FAISS lists over per-partition
  ``IndexIVFFlat`` indexes (nlist = nlist_factor·√N) for partitions of ``--flat-below``
  vectors or more (smaller ones ``IndexFlatIP``), searched with ``nprobe`` P;
- ``hnsw ef=E``: the same over ``IndexHNSWFlat`` (M = ``--hnsw-m``), ``efSearch`` E (a search
  for k neighbours uses at least k).

Timed users are whole runs of the nightly's search order (``compute.candidates.search_order``,
slices of ``--slice`` users at random offsets, as its shards are cut), split by *reach* — the
candidates a user's search partitions hold, which ``candidates.exact_below`` is compared with —
and generated in shards of ``--shard`` users per reach bucket, one FAISS and one BLAS thread
(as a Ray actor runs). Recall@K is that of the final top K (``score_pairs`` over the pool)
against exhaustive exact scoring of every filter-passing candidate, on up to
``--recall-per-bucket`` users per bucket; "lists" is the recall of the quiz neighbour lists
against exhaustive cosine search (the index's own approximation). Memory: peak RSS of this
process while the method builds, searches and is audited (sampled every 10 ms), above the RSS
with the population loaded (so a method's indexes count), and their serialized size.

Each (users, layout) pair replaces its own ``###`` subsection of ``## Candidate generation`` in
BENCHMARKS.md, with the command and the load average at start and end.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import sqlalchemy as sa
import threadpoolctl

from compute import candidates, scoring
from compute.population import Population
from jobs import config as config_mod
from jobs.match import core as match
from jobs.storage import engine as engine_mod
from jobs.storage import migrate
from jobs.tools import benchmarks, scratch, seed

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB_NAME = "mj_bench_candidates"
BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
SECTION = "## Candidate generation"
INTRO = (
    "Exact blocked ranking against FAISS neighbour lists (IVF, HNSW) on seeded populations, "
    "by `scripts/bench_candidates.py` (its docstring says what is measured). One subsection "
    "per population size and city layout."
)
REACH_EDGES = (0, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000)
EXACT_EVERYWHERE = 10**9
RECALL_TARGET = 0.98


# ------------------------------------------------------------------------------ population


def _seed_and_signals(url: str, n_users: int, cities: str) -> None:
    engine = engine_mod.create_engine(url)
    migrate.upgrade(engine)
    seed.seed(engine, n_users=n_users, seed=1, cities=cities)
    scratch.run_signal_jobs(engine, url, config_mod.load_config(), seed.DEFAULT_NOW)
    engine.dispose()


def seeded_population(
    n_users: int, cities: str, sqlite_dir: Path | None, config: config_mod.Config
) -> Population:
    """The cleaned population of a seeded database; the database is gone afterwards.

    Seeding and the signal jobs run in a child process, so their frames never count in
    this process's memory.
    """
    admin = None
    if sqlite_dir is None:
        admin = engine_mod.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{DB_NAME}"')
        url = sa.engine.make_url(ADMIN_URL).set(database=DB_NAME).render_as_string(False)
    else:
        path = sqlite_dir / f"bench_candidates_{cities}_{n_users}.db"
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
    try:
        child = multiprocessing.get_context("spawn").Process(
            target=_seed_and_signals, args=(url, n_users, cities)
        )
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"seeding failed with exit code {child.exitcode}")
        engine = engine_mod.create_engine(url)
        pop = scratch.load_population(engine, config, seed.DEFAULT_NOW)
        engine.dispose()
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            admin.dispose()
        elif sqlite_dir is not None:
            (sqlite_dir / f"bench_candidates_{cities}_{n_users}.db").unlink(missing_ok=True)
    return pop


# ------------------------------------------------------------------------------ memory


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Peak resident memory of this process while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRss:
        self.start_mb = self.peak_mb = _rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak_mb = max(self.peak_mb, _rss_mb())

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_mb())


def index_mb(indexes: candidates.CandidateIndexes) -> float:
    """Serialized size of every FAISS index (one at a time: no copy of them all at once)."""
    total = 0
    for src in indexes.sources:
        for index in src.indexes:
            if index is not None:
                total += faiss.serialize_index(index).nbytes
    return total / 2**20


# ------------------------------------------------------------------------------ measuring


@dataclasses.dataclass(frozen=True)
class Method:
    label: str
    params: candidates.CandidateParams
    build_key: str  # methods with one key share their indexes (search-time settings differ)


def methods(base: candidates.CandidateParams, args: argparse.Namespace) -> list[Method]:
    exact = Method("exact", dataclasses.replace(base, exact_below=EXACT_EVERYWHERE), "exact")
    ivf = [
        Method(
            f"ivf nprobe={p}",
            dataclasses.replace(
                base, exact_below=1, flat_below=args.flat_below, ann_index="ivf", nprobe=p
            ),
            "ivf",
        )
        for p in args.nprobe
    ]
    hnsw = [
        Method(
            f"hnsw ef={e}",
            dataclasses.replace(
                base,
                exact_below=1,
                flat_below=args.flat_below,
                ann_index="hnsw",
                ef_search=e,
                hnsw_m=args.hnsw_m,
            ),
            "hnsw",
        )
        for e in args.ef_search
    ]
    return [exact, *ivf, *hnsw]


def bucket_of(reach: np.ndarray) -> np.ndarray:
    return np.searchsorted(np.asarray(REACH_EDGES[1:]), reach, side="right")


def bucket_label(b: int) -> str:
    def k(v: int) -> str:
        return f"{v // 1000}k"

    lo = REACH_EDGES[b]
    return f"≥ {k(lo)}" if b + 1 >= len(REACH_EDGES) else f"{k(lo)}–{k(REACH_EDGES[b + 1])}"


def timed_rows(
    order: np.ndarray, n_timed: int, slice_len: int, rng: np.random.Generator
) -> np.ndarray:
    """Whole slices of the search order at random offsets, about ``n_timed`` rows in all."""
    n = order.size
    if n_timed >= n:
        return order.copy()
    n_slices = max(1, n_timed // slice_len)
    starts = np.sort(rng.choice(max(1, n // slice_len), size=n_slices, replace=False)) * slice_len
    return np.concatenate([order[s : s + slice_len] for s in starts])


def measure_layout(
    pop: Population, settings: match.MatchSettings, args: argparse.Namespace
) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    exact_params = dataclasses.replace(settings.candidates, exact_below=EXACT_EVERYWHERE)
    reference = match.build_indexes(pop, dataclasses.replace(settings, candidates=exact_params))
    order = candidates.search_order(pop, reference)
    rows = timed_rows(order, args.time_users, args.slice, rng)
    reach = candidates.reach_counts(pop, reference, rows, settings.filters)
    buckets = bucket_of(reach)
    partition_sizes = np.diff(reference.source("fallback").member_indptr)
    quiz_sizes = np.diff(reference.source("quiz").member_indptr)
    ann_share = float(quiz_sizes[quiz_sizes >= args.flat_below].sum() / max(quiz_sizes.sum(), 1))
    del reference

    # Recall sample: up to --recall-per-bucket timed users of each reach bucket.
    recall_rows_list = []
    for b in np.unique(buckets):
        members = rows[buckets == b]
        take = min(args.recall_per_bucket, members.size)
        recall_rows_list.append(rng.choice(members, size=take, replace=False))
    recall_rows = np.sort(np.concatenate(recall_rows_list))
    by_row = np.argsort(rows)
    recall_buckets = buckets[by_row[np.searchsorted(rows[by_row], recall_rows)]]
    k = settings.scoring.top_k
    started = time.perf_counter()
    exhaustive = match.exhaustive_top_k(pop, recall_rows, settings)
    exhaustive_s = time.perf_counter() - started
    exact_lists, _ = candidates.exact_candidates(
        pop, recall_rows, "quiz", settings.candidates.k_quiz, settings.filters
    )

    results = []
    built: dict[str, tuple[candidates.CandidateIndexes, float, float]] = {}
    baseline_mb = _rss_mb()
    for method in methods(settings.candidates, args):
        if method.build_key not in built:
            built.clear()  # one method's indexes in memory at a time
        with PeakRss() as rss:
            if method.build_key not in built:
                started = time.perf_counter()
                indexes = candidates.build_indexes(
                    pop, method.params, np.random.default_rng(settings.index_seed)
                )
                built[method.build_key] = (
                    indexes,
                    time.perf_counter() - started,
                    index_mb(indexes),
                )
            indexes, build_s, size_mb = built[method.build_key]
            per_bucket = {}
            for b in np.unique(buckets):
                members = rows[buckets == b]
                seconds = 0.0
                for start in range(0, members.size, args.shard):
                    shard = members[start : start + args.shard]
                    started = time.perf_counter()
                    candidates.generate_candidates(
                        pop, indexes, shard, method.params, settings.filters, settings.scoring
                    )
                    seconds += time.perf_counter() - started
                per_bucket[int(b)] = {"users": int(members.size), "seconds": seconds}
            pool = candidates.generate_candidates(
                pop, indexes, recall_rows, method.params, settings.filters, settings.scoring
            )
            scored = scoring.score_pairs(pop, pool.user_rows, pool.cand_rows, settings.scoring)
            kept = match.kept_table(scored, recall_rows, k)
        recall_by_bucket = {
            int(b): candidates.recall_at_k(
                kept[recall_buckets == b], exhaustive[recall_buckets == b]
            )
            for b in np.unique(recall_buckets)
        }
        lists = (
            candidates.recall_at_k(
                pool.source_table("quiz", settings.candidates.k_quiz), exact_lists
            )
            if method.build_key != "exact"
            else None
        )
        total_s = sum(v["seconds"] for v in per_bucket.values())
        results.append(
            {
                "method": method.label,
                "build_s": build_s,
                "index_mb": size_mb,
                "rss_delta_mb": rss.peak_mb - baseline_mb,
                "rss_peak_mb": rss.peak_mb,
                "per_bucket": per_bucket,
                "ms_per_user": 1000 * total_s / rows.size,
                "recall": candidates.recall_at_k(kept, exhaustive),
                "recall_by_bucket": recall_by_bucket,
                "list_recall": lists,
            }
        )
        print(
            f"  {method.label}: build {build_s:.1f} s, {results[-1]['ms_per_user']:.2f} ms/user, "
            f"recall@{k} {results[-1]['recall']:.4f}, RSS +{results[-1]['rss_delta_mb']:.0f} MB",
            flush=True,
        )
    built.clear()
    return {
        "users": pop.n_users,
        "timed_users": int(rows.size),
        "recall_users": int(recall_rows.size),
        "exhaustive_ms_per_user": 1000 * exhaustive_s / max(recall_rows.size, 1),
        "reach_p50": float(np.percentile(reach, 50)),
        "reach_p90": float(np.percentile(reach, 90)),
        "reach_max": int(reach.max(initial=0)),
        "partitions": int(partition_sizes.size),
        "largest_partition": int(partition_sizes.max(initial=0)),
        "ann_partitions": int((quiz_sizes >= args.flat_below).sum()),
        "ann_share": ann_share,
        "flat_below": args.flat_below,
        "k": k,
        "results": results,
    }


# ------------------------------------------------------------------------------ the table


def crossover(measured: dict[str, Any]) -> tuple[int | None, str]:
    """The lowest reach bucket where a FAISS setting with recall ≥ target beats exact."""
    results = measured["results"]
    exact = next(r for r in results if r["method"] == "exact")
    for b in sorted(exact["per_bucket"]):
        exact_ms = exact["per_bucket"][b]["seconds"] / max(exact["per_bucket"][b]["users"], 1)
        for r in results[1:]:
            if r["recall_by_bucket"].get(b, 0.0) < RECALL_TARGET:
                continue
            ms = r["per_bucket"][b]["seconds"] / max(r["per_bucket"][b]["users"], 1)
            if ms < exact_ms:
                return REACH_EDGES[b], f"{r['method']} beats exact from reach {REACH_EDGES[b]:,}"
    faster = [
        r["method"]
        for r in results[1:]
        if r["ms_per_user"] < exact["ms_per_user"] and r["recall"] < RECALL_TARGET
    ]
    note = f" ({', '.join(faster)} faster, but below recall {RECALL_TARGET})" if faster else ""
    return None, f"no reach bucket where FAISS at recall ≥ {RECALL_TARGET} beats exact{note}"


def render(
    n_users: int,
    cities: str,
    measured: dict[str, Any],
    command: str,
    load: tuple[tuple[float, ...], tuple[float, ...]],
) -> str:
    results = measured["results"]
    buckets = sorted(results[0]["per_bucket"])
    k = measured["k"]
    head = ["method", "build s", "index MB", "peak RSS +MB"]
    head += [
        f"reach {bucket_label(b)} ({results[0]['per_bucket'][b]['users']:,} users): "
        f"ms/user · recall@{k}"
        for b in buckets
    ]
    head += ["all timed: ms/user", f"recall@{k}", "lists (quiz)"]
    lines = [
        f"### {n_users:,} users, {cities} cities",
        "",
        "```",
        command,
        "```",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, numpy {np.__version__}, faiss {faiss.__version__}; one "
        "FAISS and one BLAS thread",
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}; load average "
        f"{' '.join(f'{v:.2f}' for v in load[0])} at start, "
        f"{' '.join(f'{v:.2f}' for v in load[1])} at the end (other work shares these cores)",
        f"- population: {measured['users']:,} users after cleaning; {measured['partitions']:,} "
        f"partitions (largest {measured['largest_partition']:,}); timed users' reach "
        "p50 / p90 / max "
        f"{measured['reach_p50']:,.0f} / {measured['reach_p90']:,.0f} / "
        f"{measured['reach_max']:,}",
        f"- FAISS methods: {measured['ann_partitions']:,} partitions of ≥ "
        f"{measured['flat_below']:,} quiz vectors get the IVF / HNSW index "
        f"({measured['ann_share']:.0%} of the vectors); smaller ones are searched flat",
        f"- timed: {measured['timed_users']:,} users (candidate generation only); recall: "
        f"{measured['recall_users']} users against exhaustive scoring "
        f"({measured['exhaustive_ms_per_user']:.1f} ms per user)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results:
        cells = [
            r["method"],
            f"{r['build_s']:.1f}",
            f"{r['index_mb']:.0f}",
            f"{r['rss_delta_mb']:.0f}",
        ]
        for b in buckets:
            per = r["per_bucket"][b]
            ms = 1000 * per["seconds"] / max(per["users"], 1)
            recall = r["recall_by_bucket"].get(b)
            cells.append(f"{ms:.2f} · {recall:.3f}" if recall is not None else f"{ms:.2f}")
        cells += [
            f"{r['ms_per_user']:.2f}",
            f"{r['recall']:.4f}",
            "-" if r["list_recall"] is None else f"{r['list_recall']:.3f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    _, verdict = crossover(measured)
    lines += ["", f"Crossover: {verdict}."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--cities", nargs="+", choices=seed.CITY_LAYOUTS, default=["realistic"])
    parser.add_argument("--time-users", type=int, default=10_000)
    parser.add_argument("--slice", type=int, default=2_000, help="search-order slice length")
    parser.add_argument("--shard", type=int, default=2_000, help="users per generate call")
    parser.add_argument("--recall-per-bucket", type=int, default=40)
    parser.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 256])
    # A search for k neighbours uses efSearch ≥ k: with k = 200 (+ margin, exclusions) the
    # first fetch is 256, so settings below 256 are 256.
    parser.add_argument("--ef-search", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument(
        "--flat-below", type=int, default=1000, help="FAISS methods: smaller partitions flat"
    )
    parser.add_argument(
        "--sqlite-dir", type=Path, help="seed into SQLite files here (default: PostgreSQL)"
    )
    parser.add_argument("--out", type=Path, default=BENCHMARKS, help="the file to write")
    parser.add_argument("--no-write", action="store_true", help="print, don't write --out")
    args = parser.parse_args(argv)
    command = "$ .venv/bin/python scripts/bench_candidates.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    logging.basicConfig(level=logging.WARNING)
    config = config_mod.load_config()
    settings = match.settings_from_config(config)
    faiss.omp_set_num_threads(1)
    with threadpoolctl.threadpool_limits(1):
        for cities in args.cities:
            load_start = os.getloadavg()
            print(f"{args.users:,} users, {cities} cities: seeding", flush=True)
            pop = seeded_population(args.users, cities, args.sqlite_dir, config)
            measured = measure_layout(pop, settings, args)
            del pop
            section = render(args.users, cities, measured, command, (load_start, os.getloadavg()))
            print(section, flush=True)
            if not args.no_write:
                subheading = section.splitlines()[0]
                benchmarks.replace_subsection(args.out, SECTION, INTRO, subheading, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
