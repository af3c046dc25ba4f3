"""``python -m boltzgen.jobs JOBDIR [CHECKPOINT_DIR]``: run one job (used by executors)."""

from boltzgen.jobs.protocol import main

raise SystemExit(main())
