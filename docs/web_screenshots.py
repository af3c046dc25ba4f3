"""Screenshots of the web pages for the README (docs/web-*.png), from a real service.

Starts the app under uvicorn with the embedded worker pool in a temporary state directory,
uploads alanine dipeptide, runs a short ``pipeline`` job (``--budget-minutes``, default 4:
long enough for a converged dF of the phi dihedral) and two MD jobs (one cancelled), and
photographs the job list, the pipeline job's page while it runs, and its report once it is
done, with Debian's Chromium driven by Playwright.

    python docs/web_screenshots.py [--out docs] [--budget-minutes 4]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from playwright.sync_api import sync_playwright

from server.app import create_app
from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(what)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    ap.add_argument("--budget-minutes", type=float, default=4.0)
    args = ap.parse_args()
    admin = "bgk_admin_" + secrets.token_urlsafe(16)
    state = Path(tempfile.mkdtemp(prefix="boltzgen-shots-"))
    settings = Settings(state_dir=state, admin_key=admin, executor="local", workers=2)
    app = create_app(settings)
    _, key = app.state.store.create_key("screenshots")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    wait(lambda: server.started, 60, "uvicorn start")
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    pdb = (ROOT / "data" / "alanine-dipeptide.pdb").read_text()
    system = api.post("/v1/systems", json={"pdb": pdb, "name": "alanine dipeptide"}).json()["id"]

    def submit(kind: str, params: dict) -> str:
        body = {"kind": kind, "system_id": system, "params": params}
        r = api.post("/v1/jobs", json=body)
        r.raise_for_status()
        return r.json()["id"]

    md = submit("simulate", {"n_steps": 2000, "report_interval": 100})
    wait(lambda: api.get(f"/v1/jobs/{md}").json()["status"] == "succeeded", 300, "MD job")
    doomed = submit("simulate", {"n_steps": 1000000, "report_interval": 1000})
    time.sleep(2)
    api.post(f"/v1/jobs/{doomed}/cancel")
    job = submit("pipeline", {"budget_minutes": args.budget_minutes, "seed": 1})
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{url}/ui/login")
        page.fill("#key", key)
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/ui/jobs")
        page.goto(f"{url}/ui/jobs/{job}")
        wait(lambda: 0.4 < api.get(f"/v1/jobs/{job}").json()["progress"] < 0.9, 900, "progress")
        time.sleep(1.5)  # the page follows the events
        page.screenshot(path=str(args.out / "web-job.png"))
        wait(lambda: api.get(f"/v1/jobs/{job}").json()["status"] == "succeeded", 3600, "pipeline")
        page.goto(f"{url}/ui/jobs")
        page.screenshot(path=str(args.out / "web-jobs.png"))
        page.goto(f"{url}/ui/jobs/{job}/report")
        for i in range(page.locator("#report img").count()):
            page.locator("#report img").nth(i).scroll_into_view_if_needed()
        page.wait_for_load_state("networkidle")
        page.set_viewport_size({"width": 1280, "height": 1400})
        # the free energies: the table and the figures (FES, Ramachandran) below it
        heading = page.locator("#report h2", has_text="Free energies")
        heading.evaluate("h => window.scrollTo(0, h.getBoundingClientRect().top + scrollY - 12)")
        page.screenshot(path=str(args.out / "web-report.png"))
        browser.close()
    server.should_exit = True
    print("screenshots in", args.out)


if __name__ == "__main__":
    main()
