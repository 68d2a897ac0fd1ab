"""``python hold_worker.py MARKER matchjobs-args…``: the real ``matchjobs`` CLI, except that
the quiz job, once started under the ledger, writes its run id to MARKER and never returns.

The kill test uses it to hold a worker mid-batch at a point it can see (events claimed, a
quiz run holding its slot and beating), then SIGKILLs it. Nothing else is changed: the
database, the claim, the runner and its heartbeat threads are the production code.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from jobs import cli, runner
from jobs.context import JobContext, JobResult, Scope

_real_job_function = runner.job_function


def _held_job_function(job_name: str) -> runner.JobFn:
    if job_name != "quiz":
        return _real_job_function(job_name)

    def held(ctx: JobContext, scope: Scope) -> JobResult:
        Path(sys.argv[1]).write_text(str(ctx.run_id))
        while True:
            time.sleep(60)

    return held


if __name__ == "__main__":
    runner.job_function = _held_job_function
    sys.exit(cli.main(sys.argv[2:]))
