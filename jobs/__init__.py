"""Everything in matchjobs that has effects: config, storage, jobs, Ray, worker, CLI."""
