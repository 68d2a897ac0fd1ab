"""scripts/bench_candidates.py keeps working: a small run of its main, real FAISS, both layouts."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest


@pytest.fixture
def bench(script: Callable[[str], ModuleType]) -> ModuleType:
    return script("bench_candidates")


@pytest.mark.slow
def test_a_small_run_writes_a_row_per_method_and_exact_recall_is_one(
    bench: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\n## Seed\n\nseed figures\n")
    argv = [
        "--users", "2000", "--cities", "realistic", "dense", "--time-users", "800",
        "--slice", "400", "--shard", "400", "--recall-per-bucket", "15",
        "--nprobe", "4", "64", "--ef-search", "256",
        "--sqlite-dir", str(tmp_path), "--out", str(out),
    ]  # fmt: skip
    assert bench.main(argv) == 0
    text = out.read_text()
    assert "seed figures" in text and "## Candidate generation" in text
    assert not list(tmp_path.glob("*.db"))  # the seeded databases are gone
    for cities in ("realistic", "dense"):
        heading = f"### 2,000 users, {cities} cities"
        part = text[text.index(heading) :].split("\n### ")[0]
        rows = {
            cells[0]: cells
            for line in part.splitlines()
            if line.startswith("| ") and not line.startswith("| method")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]
        }
        assert set(rows) == {"exact", "ivf nprobe=4", "ivf nprobe=64", "hnsw ef=256"}
        recall_column = -2
        assert rows["exact"][recall_column] == "1.0000"  # exact blocked ranking is exhaustive
        for method in ("ivf nprobe=64", "hnsw ef=256"):
            # Within reach of top_k + margin, the FAISS lists hold every candidate too.
            assert float(rows[method][recall_column]) >= 0.98, (method, rows[method])
        assert re.search(r"load average \d+\.\d\d", part)
        assert "Crossover: " in part


def test_reach_buckets_cover_every_reach(bench: ModuleType) -> None:
    reach = [0, 1_999, 2_000, 99_999, 100_000, 10**7]
    assert bench.bucket_of(np.asarray(reach)).tolist() == [0, 0, 1, 5, 6, 6]
    assert bench.bucket_label(0) == "0k–2k" and bench.bucket_label(6) == "≥ 100k"
