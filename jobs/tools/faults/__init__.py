"""The fault suite of issue 9: real faults against real processes, checked by independent SQL.

- ``world``: a seeded PostgreSQL database, the small config every process reads, and the
  child processes (the CLI in its own process group) that faults are sent to;
- ``proxy``: a TCP proxy on loopback that cuts connections mid-COPY or mid-commit;
- ``reader``: the API's query in a loop, counting reads that mix or halve sets;
- ``scenarios``: one function per fault, returning figures and invariant counts;
- ``suite``: runs the scenarios (``scripts/faults``) and writes RELIABILITY.md.

The invariants themselves are SQL, in ``jobs.storage.invariants``.
"""
