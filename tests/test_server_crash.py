"""A worker killed mid-job (SIGKILL, no cleanup): its job process exits by itself, the lease
expires, another worker claims the job and resumes it from the last checkpoint; the result
equals an uninterrupted run (deterministic Reference platform)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
from _server_fixtures import ADP, REPO, LiveServer, settings_for, wait_for

from boltzgen import jobs
from boltzgen.md import load_md
from boltzgen.systems import System


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead


def _worker(state_dir: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        BOLTZGEN_STATE_DIR=str(state_dir),
        BOLTZGEN_WORKERS="1",
        BOLTZGEN_LEASE_SECONDS="2",
        BOLTZGEN_HEARTBEAT_SECONDS="0.3",
        BOLTZGEN_POLL_SECONDS="0.05",
        BOLTZGEN_RETRY_BACKOFF_SECONDS="0.1",
    )
    return subprocess.Popen(
        [sys.executable, "-m", "server.worker"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


PARAMS = {
    "n_steps": 1_000_000,  # ~10 s on an idle core: the kill must land before the job ends
    "report_interval": 10_000,
    "checkpoint_interval": 10_000,
    "platform": "Reference",
    "seed": 7,
}


def test_killed_worker_job_resumes_after_lease_expiry(tmp_path):
    state_dir = tmp_path / "state"
    settings = settings_for(state_dir, executor="none", lease_seconds=2.0)
    workers: list[subprocess.Popen] = []
    try:
        with LiveServer(settings) as srv, srv.client() as c:
            sid = c.post("/v1/systems", json={"pdb": ADP.read_text()}).json()["id"]
            job_id = c.post(
                "/v1/jobs", json={"kind": "simulate", "system_id": sid, "params": PARAMS}
            ).json()["id"]
            workers.append(_worker(state_dir))
            ckpt = state_dir / "jobs" / job_id / "checkpoint" / "simulate.json"
            wait_for(
                lambda: ckpt.exists() and json.loads(ckpt.read_text())["done"] >= 10_000,
                timeout=120,
                interval=0.01,
            )
            child = int((state_dir / "jobs" / job_id / "attempt-1" / "pid").read_text())
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait(10)
            wait_for(lambda: not _alive(child), timeout=10)  # no orphan keeps running
            done_at_kill = json.loads(ckpt.read_text())["done"]
            assert done_at_kill < PARAMS["n_steps"]
            assert c.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # until expiry

            workers.append(_worker(state_dir))
            job = wait_for(
                lambda: (
                    (j := c.get(f"/v1/jobs/{job_id}").json())["status"] in ("succeeded", "failed")
                    and j
                ),
                timeout=120,
            )
            assert job["status"] == "succeeded", job
            assert job["attempts"] == 2
            assert job["last_error"]["type"] == "LeaseExpired"
            assert job["result"]["resumed_from_step"] == done_at_kill
            assert job["result"]["n_frames"] == 100
            art = next(
                a
                for a in c.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
                if a["name"] == "trajectory.h5"
            )
            resumed = tmp_path / "resumed.h5"
            resumed.write_bytes(c.get(art["links"]["content"]).content)
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGTERM)
                w.wait(30)
    # the same job, uninterrupted, in this process
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    spec = System.from_pdb(ADP).to_spec()
    (ref_dir / "job.json").write_text(
        json.dumps({"kind": "simulate", "params": {**PARAMS, "system": spec}})
    )
    assert jobs.run_job_dir(ref_dir)["status"] == "succeeded"
    a, b = load_md(resumed), load_md(ref_dir / "work" / "trajectory.h5")
    np.testing.assert_array_equal(a.trajectory.xyz, b.trajectory.xyz)
    np.testing.assert_array_equal(a.potential_energy, b.potential_energy)
    np.testing.assert_allclose(a.time, b.time)
