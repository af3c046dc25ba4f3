"""Job kinds: the units of work the service (or any executor) runs, defined in the library.

* :mod:`~boltzgen.jobs.registry`: kinds by name (``job_kind`` decorator, ``get_kind``,
  ``validate_params``, plugins from ``$BOLTZGEN_JOB_MODULES``).
* :mod:`~boltzgen.jobs.params`: parameter bases (``SystemParams``, ``ModelParams``,
  ``ArtifactPath``).
* :mod:`~boltzgen.jobs.protocol`: the directory protocol executors use (``run_job_dir``:
  ``job.json`` in, ``work/``, ``progress.jsonl`` and ``result.json`` out, checkpoints, the
  parent watchdog).
* :mod:`~boltzgen.jobs.kinds`: one module per built-in kind (simulate, energy, train, sample,
  free_energy); adding a kind is adding a module there.

Imports inside this package only point down: kinds -> protocol -> registry -> params.
"""

from boltzgen.jobs.params import (
    SERVICE_FIELDS,
    ArtifactPath,
    ArtifactRef,
    JobParams,
    ModelParams,
    SystemParams,
    artifact_fields,
    iter_params,
)
from boltzgen.jobs.protocol import (
    RESULT_MODEL_FILE,
    ProgressWriter,
    job_dir_paths,
    main,
    run_job_dir,
    watch_parent,
    write_json_atomic,
)
from boltzgen.jobs.registry import (
    PLUGINS_ENV,
    JobKind,
    ProgressFn,
    RunFn,
    get_kind,
    job_kind,
    job_kinds,
    load_plugins,
    validate_params,
)

__all__ = [
    "PLUGINS_ENV",
    "RESULT_MODEL_FILE",
    "SERVICE_FIELDS",
    "ArtifactPath",
    "ArtifactRef",
    "JobKind",
    "JobParams",
    "ModelParams",
    "ProgressFn",
    "ProgressWriter",
    "RunFn",
    "SystemParams",
    "artifact_fields",
    "get_kind",
    "iter_params",
    "job_dir_paths",
    "job_kind",
    "job_kinds",
    "load_plugins",
    "main",
    "run_job_dir",
    "validate_params",
    "watch_parent",
    "write_json_atomic",
]
