"""The real server under uvicorn on 127.0.0.1 with the embedded local worker pool: MD job end to
end, artifact download (Range) into mdtraj, SSE with Last-Event-ID, cancel killing the process,
a killed job process retried from its checkpoint, and the SDK."""

from __future__ import annotations

import os
import signal

import httpx
import mdtraj
import numpy as np
import pytest
from _server_fixtures import ADMIN, ADP, LiveServer, settings_for, wait_for

from boltzgen.client import ApiError, Client, parse_sse
from boltzgen.md import load_md


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    settings = settings_for(tmp_path_factory.mktemp("live"), executor="local", workers=1)
    with LiveServer(settings) as srv:
        with srv.client() as c:
            r = c.post("/v1/systems", json={"pdb": ADP.read_text(), "name": "adp"})
            assert r.status_code == 201, r.text
            srv.system_id = r.json()["id"]
        yield srv


@pytest.fixture(scope="module")
def sim_job(live) -> str:
    """A small simulate job (600 steps, 12 frames, 3 checkpoint chunks), submitted once."""
    params = {"n_steps": 600, "report_interval": 50, "checkpoint_interval": 200, "seed": 3}
    with live.client() as c:
        r = c.post(
            "/v1/jobs", json={"kind": "simulate", "system_id": live.system_id, "params": params}
        )
        assert r.status_code == 202
        job_id = r.json()["id"]
        wait_for(lambda: c.get(f"/v1/jobs/{job_id}").json()["status"] != "queued", timeout=60)
    return job_id


def _pid(live, job_id: str, attempt: int) -> int | None:
    path = live.settings.state_dir / "jobs" / job_id / f"attempt-{attempt}" / "pid"
    return int(path.read_text()) if path.exists() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_simulate_end_to_end_with_sse_and_range(live, tmp_path):
    with live.client() as c:
        params = {"n_steps": 600, "report_interval": 50, "checkpoint_interval": 200, "seed": 3}
        r = c.post(
            "/v1/jobs", json={"kind": "simulate", "system_id": live.system_id, "params": params}
        )
        assert r.status_code == 202
        job_id = r.json()["id"]
        # SSE: follow the job to its end
        with c.stream("GET", f"/v1/jobs/{job_id}/events") as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = list(parse_sse(s.iter_lines()))
        kinds = [e["event"] for e in events]
        statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
        assert statuses[0] == "queued" and statuses[-1] == "succeeded" and "running" in statuses
        prog = [e["data"]["progress"] for e in events if e["event"] == "progress"]
        assert prog and prog == sorted(prog) and prog[-1] == 1.0
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert "progress" in kinds
        # resume after the second event: exactly the rest comes back
        with c.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(ids[1])}
        ) as s:
            rest = list(parse_sse(s.iter_lines()))
        assert [int(e["id"]) for e in rest] == ids[2:]

        job = c.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["attempts"] == 1 and job["progress"] == 1.0
        assert job["result"]["n_frames"] == 12 and job["result"]["n_chunks"] == 3
        arts = c.get(f"/v1/jobs/{job_id}/artifacts").json()["items"]
        traj_art = next(a for a in arts if a["name"] == "trajectory.h5")
        assert traj_art["media_type"] == "application/x-hdf5"
        url = traj_art["links"]["content"]
        full = c.get(url)
        assert full.status_code == 200 and len(full.content) == traj_art["size"]
        assert full.headers["accept-ranges"] == "bytes"
        part = c.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == full.content[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{traj_art['size']}"
        path = tmp_path / "t.h5"
        path.write_bytes(full.content)
    traj = mdtraj.load(str(path))
    assert traj.n_frames == 12 and traj.n_atoms == 22
    np.testing.assert_allclose(traj.time, 0.1 * np.arange(1, 13), rtol=1e-6)
    md = load_md(path)
    assert md.forces.shape == (12, 22, 3) and np.isfinite(md.potential_energy).all()
    assert md.potential_energy.mean() == pytest.approx(
        job["result"]["mean_potential_energy_kj_mol"]
    )


def test_cancel_kills_running_process(live):
    with live.client() as c:
        params = {"n_steps": 50_000_000, "report_interval": 1000, "checkpoint_interval": 50_000}
        job_id = c.post(
            "/v1/jobs", json={"kind": "simulate", "system_id": live.system_id, "params": params}
        ).json()["id"]
        wait_for(lambda: c.get(f"/v1/jobs/{job_id}").json()["progress"] > 0, timeout=90)
        pid = _pid(live, job_id, 1)
        assert pid is not None and _alive(pid)
        r = c.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["cancel_requested"]
        job = wait_for(
            lambda: (j := c.get(f"/v1/jobs/{job_id}").json())["status"] != "running" and j,
            timeout=30,
        )
        assert job["status"] == "cancelled" and job["finished_at"] is not None
        assert job["progress"] < 1.0
        wait_for(lambda: not _alive(pid), timeout=10)
        # idempotent: cancelling again changes nothing; a cancelled job can be deleted
        assert c.post(f"/v1/jobs/{job_id}/cancel").json()["status"] == "cancelled"
        assert c.delete(f"/v1/jobs/{job_id}").status_code == 204
        assert not (live.settings.state_dir / "jobs" / job_id).exists()


def test_killed_job_process_is_retried_from_checkpoint(live):
    with live.client() as c:
        params = {
            "n_steps": 60_000,
            "report_interval": 500,
            "checkpoint_interval": 5_000,
            "platform": "Reference",
        }
        job_id = c.post(
            "/v1/jobs", json={"kind": "simulate", "system_id": live.system_id, "params": params}
        ).json()["id"]
        state = live.settings.state_dir / "jobs" / job_id / "checkpoint" / "simulate.json"
        wait_for(state.exists, timeout=90, interval=0.01)
        pid = _pid(live, job_id, 1)
        os.kill(pid, signal.SIGKILL)
        job = wait_for(
            lambda: (
                (j := c.get(f"/v1/jobs/{job_id}").json())["status"] in ("succeeded", "failed") and j
            ),
            timeout=120,
        )
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    assert job["last_error"]["type"] == "ProcessCrashed"
    assert 0 < job["result"]["resumed_from_step"] < 60_000
    assert job["result"]["n_frames"] == 120


def test_sdk_against_live_server(live, sim_job, tmp_path):
    sdk = Client(live.url, api_key=ADMIN, max_retries=2)
    sdk.wait(sim_job, timeout=120)
    key = sdk.create_key("sdk").key
    with Client(live.url, api_key=key) as user:
        assert user.health()["status"] == "ok"
        system = user.upload_system(ADP, name="adp-sdk")
        assert system.n_atoms == 22
        x = np.stack([load_md_positions(live), load_md_positions(live) + 0.001])
        seen = []
        job = user.submit("energy", system_id=system.id, params={"positions": x.tolist()})
        assert job.status == "queued"
        job = user.wait(job.id, timeout=120, progress=seen.append)
        assert job.status == "succeeded" and job.result["n_frames"] == 2
        assert seen and seen[-1].status == "succeeded"
        npz = user.download(user.artifact(job.id, "energies.npz"), tmp_path)
        data = np.load(npz)
        assert data["reduced_energy"].shape == (2,) and data["forces"].shape == (2, 22, 3)
        assert [j.id for j in user.iter_jobs(page_size=1)] == [job.id]
        # another key's artifacts are invisible to this one
        with pytest.raises(ApiError) as err:
            user.load_trajectory(sim_job, "trajectory.h5")
        assert err.value.status == 404
        # positions of the wrong shape are refused at submit (422 naming the field), not in a worker
        with pytest.raises(ApiError, match="positions") as err:
            user.submit("energy", system_id=system.id, params={"positions": [[[0.0, 0.0, 0.0]]]})
        assert err.value.status == 422
    traj = sdk.load_trajectory(sim_job, "trajectory.h5")
    assert isinstance(traj, mdtraj.Trajectory) and traj.n_frames == 12
    sdk.close()


def load_md_positions(live) -> np.ndarray:
    from boltzgen.systems import System

    return System.from_pdb(ADP).positions


def test_sdk_retries_429_honouring_retry_after():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("idempotency-key"))
        if len(calls) < 3:
            return httpx.Response(
                429,
                json={"title": "Too many active jobs", "status": 429},
                headers={"Retry-After": "0"},
            )
        return httpx.Response(
            202,
            json={
                "id": "job_x",
                "kind": "energy",
                "status": "queued",
                "progress": 0.0,
                "attempts": 0,
                "max_attempts": 3,
                "created_at": "2026-11-23T00:00:00Z",
                "updated_at": "2026-11-23T00:00:00Z",
            },
        )

    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        job = c.submit("energy", system_id="s")
    assert job.id == "job_x" and len(calls) == 3
    assert len(set(calls)) == 1 and calls[0]  # one Idempotency-Key across the retries
    with Client("http://test", transport=httpx.MockTransport(handler), max_retries=0) as c:
        calls.clear()
        with pytest.raises(ApiError) as err:
            c.submit("energy", system_id="s")
    assert err.value.status == 429


def test_metrics_count_jobs(live):
    with httpx.Client(base_url=live.url) as c:
        text = c.get("/metrics").text
        assert c.get("/readyz").json()["checks"]["workers"] == "ok"
    assert 'boltzgen_jobs_submitted_total{kind="simulate"}' in text
    assert 'boltzgen_jobs{status="succeeded"}' in text


def test_cli_against_live_server(live, sim_job, tmp_path):
    import json

    from typer.testing import CliRunner

    from boltzgen.cli import app

    env = {"BOLTZGEN_URL": live.url, "BOLTZGEN_API_KEY": ADMIN}
    run = CliRunner().invoke
    assert run(app, ["wait", sim_job, "--timeout", "120"], env=env).exit_code == 0
    r = run(app, ["status", sim_job], env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == "succeeded"
    r = run(app, ["download", sim_job, "-o", str(tmp_path)], env=env)
    assert r.exit_code == 0, r.output
    assert mdtraj.load(str(tmp_path / "trajectory.h5")).n_frames == 12
    r = run(app, ["submit", "energy", "--system-id", live.system_id, "--wait"], env=env)
    assert r.exit_code == 0, r.output
    assert '"status": "succeeded"' in r.stdout
    r = run(app, ["status", "job_missing"], env=env)
    assert r.exit_code == 1 and "404" in r.output


def test_async_client_submit_wait_and_retry():
    import asyncio

    from boltzgen.client import AsyncClient

    states = iter(["queued", "running", "succeeded"])
    calls = {"post": 0}

    def job(status: str) -> dict:
        return {
            "id": "job_a",
            "kind": "energy",
            "status": status,
            "progress": 1.0 if status == "succeeded" else 0.0,
            "attempts": 1,
            "max_attempts": 3,
            "created_at": "2026-11-23T00:00:00Z",
            "updated_at": "2026-11-23T00:00:00Z",
            "result": {"n_frames": 1} if status == "succeeded" else None,
        }

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            calls["post"] += 1
            if calls["post"] == 1:
                return httpx.Response(503, json={"title": "busy"}, headers={"Retry-After": "0"})
            return httpx.Response(202, json=job("queued"))
        return httpx.Response(200, json=job(next(states)), headers={"Retry-After": "0"})

    async def run():
        async with AsyncClient("http://test", transport=httpx.MockTransport(handler)) as c:
            submitted = await c.submit("energy", system_id="s")
            return submitted, await c.wait(submitted.id, timeout=10)

    submitted, done = asyncio.run(run())
    assert calls["post"] == 2 and submitted.status == "queued"
    assert done.status == "succeeded" and done.result == {"n_frames": 1}


def test_train_registers_model_reused_by_free_energy(live, sim_job):
    """simulate -> train (registers a model) -> free_energy on that model, through the SDK.
    A tiny model: this checks the plumbing, not the physics."""
    with Client(live.url, api_key=ADMIN) as c:
        c.wait(sim_job, timeout=120)
        data = c.artifact(sim_job, "trajectory.h5")
        params = {"data": data.id, "epochs": 2, "n_layers": 1, "hidden": [16], "batch_size": 8}
        params["val_fraction"] = 0.25  # 12 frames: 3 for validation
        train = c.wait(c.submit("train", system_id=live.system_id, params=params).id, timeout=300)
        model_id = train.result["model_id"]
        model = c.get_model(model_id)
        assert model.job_id == train.id and model.system_id == live.system_id
        assert model.summary["epochs_run"] == 2
        assert {"model.pt", "history.json"} <= {a.name for a in c.artifacts(train.id)}
        fe = c.submit(
            "free_energy", model_id=model_id, params={"n_samples": 200, "n_bootstrap": 10}
        )
        assert fe.system_id == live.system_id and fe.params == {"n_samples": 200, "n_bootstrap": 10}
        fe = c.wait(fe.id, timeout=300)
        assert {"df_kT", "df_err_kT", "ess", "n_samples"} <= set(fe.result)
        assert fe.result["n_samples"] == 200 and 0 < fe.result["ess"] <= 1
        traj = c.load_trajectory(fe.id, "samples.h5")
        assert traj.n_frames == 200 and traj.n_atoms == 22
