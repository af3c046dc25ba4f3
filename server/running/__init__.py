"""Running jobs: the worker pool (claims, heartbeats, progress, cancellation) and the
executors (one process per job, or Ray)."""
