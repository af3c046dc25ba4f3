"""Running jobs: the worker pool (``worker``: claims from the queue, heartbeats, records
outcomes) and the executors it runs each job through (``executors``: local processes or Ray)."""
