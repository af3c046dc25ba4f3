"""The Ray executor against a local Ray instance (skipped when ray is not installed; CI
installs only the server and dev extras)."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from _server_fixtures import ADP, settings_for, wait_for  # noqa: E402

from boltzgen.systems import System  # noqa: E402
from server.runner.executors import RayExecutor  # noqa: E402
from server.runner.worker import WorkerPool  # noqa: E402
from server.storage.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_jobs_run_and_cancel_as_ray_tasks(tmp_path, ray_local):
    settings = settings_for(tmp_path, executor="ray", workers=1, ray_cpus_per_job=1.0)
    store = Store(settings.sqlalchemy_url)
    store.create_all()
    pool = WorkerPool(settings, store, executor=RayExecutor(settings), slots=1)
    spec = System.from_pdb(ADP).to_spec()
    ok = store.create_job("o", "energy", {"system": spec}, max_attempts=1)
    slow = store.create_job(
        "o",
        "simulate",
        {"system": spec, "n_steps": 50_000_000, "report_interval": 1000},
        max_attempts=1,
    )

    def step(job_id, done):
        pool.tick()
        job = store.get_job(job_id, None)
        return done(job) and job

    job = wait_for(lambda: step(ok["id"], lambda j: j["status"] not in ("queued", "running")), 180)
    assert job["status"] == "succeeded", job
    assert job["result"]["n_frames"] == 1
    assert [a["name"] for a in store.list_artifacts(ok["id"], "o")] == ["energies.npz"]
    # the long MD job: running as a Ray task, then cancelled -> ray.cancel(force=True)
    wait_for(lambda: step(slow["id"], lambda j: j["progress"] > 0), 180)
    store.request_cancel(slow["id"], "o")
    job = wait_for(lambda: step(slow["id"], lambda j: j["status"] != "running"), 60)
    assert job["status"] == "cancelled"
    pool.stop()
    store.dispose()
