"""All SQL of matchjobs lives in this package.

Job modules call functions from here (``storage.bulk.read_frame``, ``storage.ledger.start_run``…)
and never build SQL themselves.
"""
