"""Service throughput on loopback: job-status reads/s and submit latency at 50 concurrent clients.

Starts ``uvicorn server.app:app_from_env`` in a subprocess on a free 127.0.0.1 port (SQLite
store in a temp dir, API only: no workers, so submitted jobs stay queued), creates an API key,
uploads alanine dipeptide, then runs, each bounded in time and count:

  healthz   GET /healthz (no auth, no DB): the framework baseline, same run
  status    GET /v1/jobs/{id} with an API key (auth + one SQLite read)
  submit    POST /v1/jobs (energy kind; validation + idempotency row + insert + event)

with ``--clients`` concurrent closed-loop clients (httpx.AsyncClient, one connection each).
Prints one JSON object per line. Targets: >= 500 status reads/s, submit p99 < 50 ms.

    .venv/bin/python benchmarks/service.py [--clients 50] [--seconds 8] [--server-workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
ADMIN = "bench-admin-" + uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(state_dir: str, port: int, server_workers: int) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        BOLTZGEN_STATE_DIR=state_dir,
        BOLTZGEN_ADMIN_KEY=ADMIN,
        BOLTZGEN_EXECUTOR="none",
        BOLTZGEN_WORKERS="0",
        BOLTZGEN_MAX_ACTIVE_JOBS_PER_KEY="10000000",
    )
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "server.app:app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--workers",
        str(server_workers),
    ]
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)


async def closed_loop(n_clients, seconds, max_requests, make_request, url, headers, pace=0.0):
    """``n_clients`` tasks, each with its own connection, issuing requests back to back, or
    (``pace`` > 0) one every ``pace`` seconds per client (open loop: latency without queueing
    behind the other clients' backlog)."""
    latencies: list[float] = []
    errors = 0
    budget = [max_requests]
    stop_at = 0.0

    async def one(client: httpx.AsyncClient) -> None:
        nonlocal errors
        if pace:
            await asyncio.sleep(pace * np.random.default_rng().random())  # spread the starts
        while time.perf_counter() < stop_at and budget[0] > 0:
            budget[0] -= 1
            t0 = time.perf_counter()
            resp = await make_request(client)
            latencies.append(time.perf_counter() - t0)
            if resp.status_code >= 400:
                errors += 1
            if pace:
                await asyncio.sleep(max(0.0, pace - (time.perf_counter() - t0)))

    clients = [
        httpx.AsyncClient(
            base_url=url,
            headers=headers,
            timeout=30,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        for _ in range(n_clients)
    ]
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(*(one(c) for c in clients))
    wall = time.perf_counter() - t0
    for c in clients:
        await c.aclose()
    lat = np.array(latencies) * 1000
    return {
        "requests": len(lat),
        "errors": errors,
        "seconds": round(wall, 2),
        "per_s": round(len(lat) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "max_ms": round(float(lat.max()), 2),
    }


ROUTES = {
    "healthz": ("GET", "/healthz"),
    "status": ("GET", "/v1/jobs/{job_id}"),
    "submit": ("POST", "/v1/jobs"),
    "submit_paced": ("POST", "/v1/jobs"),
}


async def server_histogram(url: str, method: str, route: str) -> dict[float, float]:
    """Cumulative bucket counts of the server's own latency histogram for one route."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        text = (await c.get("/metrics")).text
    out = {}
    for line in text.splitlines():
        if line.startswith("boltzgen_http_request_duration_seconds_bucket{") and (
            f'method="{method}"' in line and f'route="{route}"' in line
        ):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def histogram_quantile(before: dict, after: dict, q: float) -> float | None:
    """Upper bucket bound (ms) holding quantile q of the requests between two scrapes."""
    bounds = sorted(after)
    total = after.get(float("inf"), 0) - before.get(float("inf"), 0)
    if total <= 0:
        return None
    for b in bounds:
        if after[b] - before.get(b, 0) >= q * total:
            return b * 1000
    return None


async def main_async(args) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as state:
        proc = start_server(state, port, args.server_workers)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                for _ in range(300):
                    try:
                        if (await c.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)
                admin = {"Authorization": f"Bearer {ADMIN}"}
                key = (await c.post("/v1/keys", json={"name": "bench"}, headers=admin)).json()[
                    "key"
                ]
                headers = {"Authorization": f"Bearer {key}"}
                pdb = (REPO / "data" / "alanine-dipeptide.pdb").read_text()
                system = (await c.post("/v1/systems", json={"pdb": pdb}, headers=headers)).json()
                job = (
                    await c.post(
                        "/v1/jobs",
                        json={"kind": "energy", "system_id": system["id"]},
                        headers=headers,
                    )
                ).json()

            async def healthz(client):
                return await client.get("/healthz")

            async def status(client):
                return await client.get(f"/v1/jobs/{job['id']}")

            body = {"kind": "energy", "system_id": system["id"], "params": {}}

            async def submit(client):
                return await client.post(
                    "/v1/jobs", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
                )

            common = {
                "clients": args.clients,
                "server_workers": args.server_workers,
                "cpus": os.cpu_count(),
            }
            results = {}
            for name, fn, target, pace in (
                ("healthz", healthz, None, 0.0),
                ("status", status, {"per_s": ">= 500"}, 0.0),
                ("submit", submit, {"p99_ms": "< 50"}, 0.0),
                ("submit_paced", submit, {"p99_ms": "< 50"}, args.pace),
            ):
                # warm-up, then the measured window
                await closed_loop(args.clients, 1.0, 500, fn, url, headers)
                before = await server_histogram(url, *ROUTES[name])
                r = await closed_loop(
                    args.clients, args.seconds, args.max_requests, fn, url, headers, pace
                )
                after = await server_histogram(url, *ROUTES[name])
                # server-side time (ASGI app in, response out): excludes client-side queueing
                r["server_p50_ms_le"] = histogram_quantile(before, after, 0.50)
                r["server_p99_ms_le"] = histogram_quantile(before, after, 0.99)
                results[name] = r
                extra = {"offered_per_s": round(args.clients / pace, 1)} if pace else {}
                line = {"bench": f"service.{name}", **common, **extra, **r, "target": target}
                print(json.dumps(line), flush=True)
            print(
                json.dumps(
                    {
                        "bench": "service.ratio",
                        "status_over_healthz_throughput": round(
                            results["status"]["per_s"] / results["healthz"]["per_s"], 3
                        ),
                        "submit_over_status_throughput": round(
                            results["submit"]["per_s"] / results["status"]["per_s"], 3
                        ),
                    }
                )
            )
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--max-requests", type=int, default=20_000)
    p.add_argument("--server-workers", type=int, default=1)
    p.add_argument(
        "--pace", type=float, default=0.25, help="s between submits per client (paced run)"
    )
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
