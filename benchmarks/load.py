"""Soak and load benchmark of a live ``boltzgen serve`` on 127.0.0.1 (one JSON object per
result on stdout, progress on stderr).

    python benchmarks/load.py                      # 5 min soak; ~7 min in all
    python benchmarks/load.py --soak-seconds 60    # quicker

1. ``machine``: core count and load average before the run (and ``machine_after`` at the end).
2. ``saturation_step`` / ``saturation``: closed-loop submits (``POST /v1/jobs``, kind ``energy``)
   at increasing concurrency (1, 2, 4, ... clients spread over the client processes) until the
   throughput stops rising (< 5 % over the best so far, twice); saturation = the best
   throughput seen.
3. ``soak``: open loop at a fixed rate of half the saturation throughput for ``--soak-seconds``
   (default 300): requests are sent on a schedule whatever the answers' speed, and each
   latency is counted from the scheduled send time (no coordinated omission). The mix is
   1 submit : 3 reads (get one of the process's jobs, list jobs, get the system), spread over
   ``--procs`` client processes (multiprocessing, one asyncio httpx client each). Every
   non-2xx answer or transport error is an error; 0 are expected.
4. ``rss``: the server process's resident memory sampled every 5 s during the soak (first and
   last minute means, max, growth).

The server runs with ``--workers 0`` by default: jobs are stored and stay queued (the API is
what is measured; on a 2-core machine job processes would take the CPU the server needs).
``--workers N`` runs N embedded job slots as well. The active-jobs-per-key limit is raised so
that submits are not refused with 429.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADP = REPO / "data" / "alanine-dipeptide.pdb"
ADMIN = "bench-admin-key-" + os.urandom(8).hex()
READS_PER_SUBMIT = 3


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


def note(msg: str) -> None:
    print(f"[load] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def q(p: float) -> float:
        return round(1000 * v[min(len(v) - 1, int(p * len(v)))], 2)

    return {"p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "max_ms": q(1.0)}


# ---------------------------------------------------------------- client processes


def _job_body(system_id: str) -> dict:
    return {"kind": "energy", "system_id": system_id, "params": {"platform": "Reference"}}


async def _closed_loop(url, key, system_id, clients, seconds):
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    ok = err = 0
    lat: list[float] = []
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as c:
        end = time.monotonic() + seconds

        async def client():
            nonlocal ok, err
            while time.monotonic() < end:
                t = time.monotonic()
                try:
                    r = await c.post("/v1/jobs", json=_job_body(system_id))
                    good = r.status_code == 202
                except httpx.HTTPError:
                    good = False
                lat.append(time.monotonic() - t)
                ok, err = ok + good, err + (not good)

        await asyncio.gather(*(client() for _ in range(clients)))
    return {"ok": ok, "errors": err, "latencies": lat}


async def _open_loop(url, key, system_id, rate, seconds, max_inflight=2000):
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    lat: dict[str, list[float]] = {"submit": [], "get_job": [], "list_jobs": [], "get_system": []}
    errors: dict[str, int] = {}
    job_ids: list[str] = []
    inflight = 0
    limits = httpx.Limits(max_connections=256)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60, limits=limits) as c:
        for _ in range(3):  # something to read from the start
            job_ids.append((await c.post("/v1/jobs", json=_job_body(system_id))).json()["id"])
        loop = asyncio.get_running_loop()

        async def one(i: int, scheduled: float) -> None:
            nonlocal inflight
            op = "submit" if i % (READS_PER_SUBMIT + 1) == 0 else None
            if op is None:
                op = ("get_job", "list_jobs", "get_system")[i % (READS_PER_SUBMIT + 1) - 1]
            try:
                if op == "submit":
                    r = await c.post("/v1/jobs", json=_job_body(system_id))
                    if r.status_code == 202:
                        job_ids.append(r.json()["id"])
                    good = r.status_code == 202
                elif op == "get_job":
                    r = await c.get(f"/v1/jobs/{job_ids[i % len(job_ids)]}")
                    good = r.status_code == 200
                elif op == "list_jobs":
                    r = await c.get("/v1/jobs", params={"limit": 20})
                    good = r.status_code == 200
                else:
                    r = await c.get(f"/v1/systems/{system_id}")
                    good = r.status_code == 200
                if not good:
                    errors[f"{op}:{r.status_code}"] = errors.get(f"{op}:{r.status_code}", 0) + 1
            except httpx.HTTPError as exc:
                name = f"{op}:{type(exc).__name__}"
                errors[name] = errors.get(name, 0) + 1
            lat[op].append(loop.time() - scheduled)
            inflight -= 1

        t0 = loop.time() + 0.1
        n = int(rate * seconds)
        tasks = set()
        for i in range(n):
            scheduled = t0 + i / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if inflight >= max_inflight:
                errors["client:overloaded"] = errors.get("client:overloaded", 0) + 1
                continue
            inflight += 1
            task = asyncio.create_task(one(i, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.sleep(0.05)
    return {"latencies": lat, "errors": errors}


def _proc_main(mode: str, args: tuple, out: mp.Queue) -> None:
    fn = _closed_loop if mode == "closed" else _open_loop
    out.put(asyncio.run(fn(*args)))


def run_procs(mode: str, per_proc_args: list[tuple]) -> list[dict]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_proc_main, args=(mode, a, out)) for a in per_proc_args]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return results


# ---------------------------------------------------------------- the benchmark


def start_server(state: Path, port: int, workers: int) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        BOLTZGEN_ADMIN_KEY=ADMIN,
        BOLTZGEN_MAX_ACTIVE_JOBS_PER_KEY=str(10**9),
        BOLTZGEN_STATE_DIR=str(state),
    )
    log = open(state / "server.log", "ab")  # noqa: SIM115 -- kept open for the server's life
    proc = subprocess.Popen(
        [sys.executable, "-m", "boltzgen", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start; see {state / 'server.log'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=4, help="client processes")
    ap.add_argument("--step-seconds", type=float, default=10.0, help="per concurrency level")
    ap.add_argument("--max-concurrency", type=int, default=128)
    ap.add_argument("--soak-seconds", type=float, default=300.0)
    ap.add_argument("--workers", type=int, default=0, help="embedded job slots of the server")
    args = ap.parse_args()

    import httpx

    emit({"result": "machine", "cpus": os.cpu_count(), "loadavg_before": loadavg()})
    tmp = Path(tempfile.mkdtemp(prefix="boltzgen-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(tmp, port, args.workers)
    try:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=url, headers=admin, timeout=60) as c:
            keys = [c.post("/v1/keys", json={"name": f"load{i}"}).json()["key"] for i in range(4)]
        system_ids = []
        for key in keys:
            with httpx.Client(base_url=url, timeout=60) as c:
                r = c.post(
                    "/v1/systems",
                    json={"pdb": ADP.read_text()},
                    headers={"Authorization": f"Bearer {key}"},
                )
                r.raise_for_status()
                system_ids.append(r.json()["id"])
        emit({"result": "server", "pid": server.pid, "rss_mb_start": round(rss_mb(server.pid), 1)})

        # -- saturation: closed loop, concurrency ramp
        best, flat, level, steps = 0.0, 0, 1, []
        while level <= args.max_concurrency:
            n_procs = min(args.procs, level)
            per = [level // n_procs + (i < level % n_procs) for i in range(n_procs)]
            note(f"saturation: {level} concurrent submitters")
            res = run_procs(
                "closed",
                [
                    (url, keys[i % 4], system_ids[i % 4], per[i], args.step_seconds)
                    for i in range(n_procs)
                ],
            )
            ok = sum(r["ok"] for r in res)
            errors = sum(r["errors"] for r in res)
            lat = [x for r in res for x in r["latencies"]]
            thr = ok / args.step_seconds
            step = {
                "result": "saturation_step",
                "concurrency": level,
                "submits_per_s": round(thr, 1),
                "errors": errors,
                **percentiles(lat),
            }
            emit(step)
            steps.append(step)
            if thr > best * 1.05:
                best, flat = thr, 0
            else:
                best, flat = max(best, thr), flat + 1
                if flat >= 2:
                    break
            level *= 2
        emit(
            {
                "result": "saturation",
                "submits_per_s": round(best, 1),
                "at_concurrency": max(steps, key=lambda s: s["submits_per_s"])["concurrency"],
                "errors": sum(s["errors"] for s in steps),
            }
        )

        # -- soak: open loop at half the saturation rate, mixed reads and submits
        rate = best / 2
        note(f"soak: {rate:.1f} req/s for {args.soak_seconds:.0f} s, {args.procs} processes")
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        procs = [
            ctx.Process(
                target=_proc_main,
                args=(
                    "open",
                    (url, keys[i % 4], system_ids[i % 4], rate / args.procs, args.soak_seconds),
                    out,
                ),
            )
            for i in range(args.procs)
        ]
        t0 = time.monotonic()
        for p in procs:
            p.start()
        samples = []
        while any(p.is_alive() for p in procs) and out.qsize() < len(procs):
            samples.append((round(time.monotonic() - t0, 1), round(rss_mb(server.pid), 1)))
            time.sleep(5.0)
        res = [out.get() for _ in procs]
        for p in procs:
            p.join()
        elapsed = time.monotonic() - t0
        by_op: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        for r in res:
            for op, v in r["latencies"].items():
                by_op.setdefault(op, []).extend(v)
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        everything = [x for v in by_op.values() for x in v]
        emit(
            {
                "result": "soak",
                "seconds": round(elapsed, 1),
                "offered_rate_per_s": round(rate, 1),
                "requests": len(everything),
                "achieved_rate_per_s": round(len(everything) / args.soak_seconds, 1),
                "errors": sum(errors.values()),
                "error_kinds": errors,
                "latency_from_schedule": percentiles(everything),
                **{f"latency_{op}": percentiles(v) for op, v in by_op.items()},
            }
        )
        mb = [m for _, m in samples]
        first = [m for t, m in samples if t <= 60] or mb[:1]
        last = [m for t, m in samples if t >= samples[-1][0] - 60] or mb[-1:]
        emit(
            {
                "result": "rss",
                "samples": len(samples),
                "first_minute_mean_mb": round(sum(first) / len(first), 1),
                "last_minute_mean_mb": round(sum(last) / len(last), 1),
                "max_mb": max(mb),
                "growth_mb": round(sum(last) / len(last) - sum(first) / len(first), 1),
                "series_s_mb": samples,
            }
        )
        with httpx.Client(base_url=url, headers=admin, timeout=60) as c:
            queued = c.get("/v1/jobs", params={"status": "queued", "limit": 1}).status_code
        emit({"result": "machine_after", "loadavg_after": loadavg(), "server_alive": queued == 200})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
