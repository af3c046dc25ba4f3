"""The web pages in a real browser: Debian's Chromium driven by Playwright's Python API
against a live server (uvicorn in a thread, the embedded worker pool running real jobs).

Log in with a key, submit a small MD job through the API and watch its progress reach
100 % on the job page without a reload (server-sent events), open a pipeline report and
check that its figures loaded, cancel a second job from its page, check that another key
sees none of it, and that HTML in a system name, a PDB remark and a job parameter shows as
text. The report comes from a fixture artifact set (``_web_fixtures.pipeline_files``: the
pipeline's report layout, real matplotlib figures, verdicts), registered through the job
queue: a real pipeline job takes minutes. Set ``BOLTZGEN_SCREENSHOTS=DIR`` to save the
three main pages as PNGs.

Skipped, loudly, only when Chromium is absent (CI installs it: ``.ci/run``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
from _server_fixtures import ADP, LiveServer, settings_for, wait_for
from _web_fixtures import HTML_PAYLOAD, finish_job, pipeline_files

CHROMIUM = os.environ.get("BOLTZGEN_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
    pytest.skip(
        f"BROWSER TESTS SKIPPED: no Chromium at {CHROMIUM} (apt-get install chromium; "
        ".ci/run installs it)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS SKIPPED: pip install playwright (dev extra)"
)

expect = sync_api.expect
SHOTS = os.environ.get("BOLTZGEN_SCREENSHOTS")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("webbrowser")
    srv = LiveServer(settings_for(tmp, executor="local", workers=1))
    store = srv.store
    srv.owner_a, srv.key_a = store.create_key("a")
    _, srv.key_b = store.create_key("b")
    # the finished pipeline job with its report: registered before the worker pool starts
    srv.report_job = finish_job(
        store,
        srv.owner_a,
        pipeline_files(tmp / "run"),
        client_params={"budget_minutes": 1, "note": HTML_PAYLOAD},
    )
    with srv:
        with srv.client(srv.key_a) as c:
            pdb = f"REMARK   1 {HTML_PAYLOAD}\n" + ADP.read_text()
            r = c.post("/v1/systems", json={"pdb": pdb, "name": HTML_PAYLOAD})
            assert r.status_code == 201, r.text
            srv.system_id = r.json()["id"]
        yield srv


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def new_page(browser, live, key: str):
    """A fresh browser context logged in with ``key``; records dialogs and console errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.problems = []
    page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
    page.on(
        "response",
        lambda r: page.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    page.on(
        "console",
        lambda m: page.problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.goto(f"{live.url}/ui/jobs")
    assert "/ui/login" in page.url
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live.url}/ui/jobs")
    return page


def submit(live, params: dict) -> str:
    with live.client(live.key_a) as c:
        r = c.post(
            "/v1/jobs", json={"kind": "simulate", "system_id": live.system_id, "params": params}
        )
        assert r.status_code == 202, r.text
        return r.json()["id"]


def shot(page, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=True)


def test_browser_session(live, browser):
    page = new_page(browser, live, live.key_a)
    context = page.context
    cookie = next(c for c in context.cookies() if c["name"] == "boltzgen_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    assert live.key_a not in cookie["value"]

    # --- a small MD job submitted through the API, followed live on its page
    job_id = submit(
        live, {"n_steps": 20_000, "report_interval": 100, "checkpoint_interval": 2000, "seed": 1}
    )
    page.goto(f"{live.url}/ui/jobs/{job_id}")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    assert page.inner_text("#state") in ("queued", "running")
    # polled from here (the CSP forbids the string evaluation wait_for_function does)
    expect(page.locator("#percent")).to_have_text("100 %", timeout=180_000)
    expect(page.locator("#state")).to_have_text("succeeded")
    page.wait_for_selector("#artifacts >> text=trajectory.h5")  # the panel, fetched at the end
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
    assert page.evaluate("document.getElementById('progress').value") == 1
    log = page.inner_text("#log")
    assert "progress" in log and "succeeded" in log
    shot(page, "web-job.png")
    size = page.inner_text("#artifacts")
    assert "KiB" in size or "MiB" in size
    href = page.get_attribute("#artifacts a", "href")
    r = context.request.get(f"{live.url}{href}")
    assert r.ok and len(r.body()) > 0

    # --- the job list shows it with its state and progress
    page.goto(f"{live.url}/ui/jobs")
    row = page.locator("#jobs tr", has_text=job_id)
    assert "succeeded" in row.inner_text() and "100 %" in row.inner_text()
    page.select_option("#status", "failed")
    page.click(".filters button")
    assert job_id not in page.inner_text("#jobs")

    # --- the report: figures loaded, verdicts beside the numbers
    page.goto(f"{live.url}/ui/jobs/{live.report_job}/report")
    images = page.locator("#report img")
    for i in range(images.count()):  # lazy images load once near the viewport
        images.nth(i).scroll_into_view_if_needed()
    widths = wait_for(
        lambda: (
            (
                w := page.eval_on_selector_all(
                    "#report img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : -1)"
                )
            )
            and all(x >= 0 for x in w)
            and w
        ),
        timeout=30,
    )
    assert len(widths) == 5 and all(w > 0 for w in widths), widths
    assert "not converged" in page.inner_text("#report") and "reliable" in page.inner_text(
        "#verdicts"
    )
    assert HTML_PAYLOAD in page.inner_text("#report h1")  # as text
    shot(page, "web-report.png")

    # --- a second job cancelled from its page
    long_id = submit(
        live, {"n_steps": 50_000_000, "report_interval": 1000, "checkpoint_interval": 5000}
    )
    # the job list refreshes its rows while a job is active: the message moves on, no reload
    page.goto(f"{live.url}/ui/jobs")
    page.evaluate("window.__sameDocument = true")
    message = page.locator("#jobs tr", has_text=long_id).locator("td.msg")
    first = message.inner_text()
    expect(message).not_to_have_text(first, timeout=120_000)
    assert "steps" in message.inner_text()
    assert page.evaluate("window.__sameDocument") is True, "the list reloaded"
    page.goto(f"{live.url}/ui/jobs/{long_id}")
    page.click("#cancel")
    page.wait_for_url(f"{live.url}/ui/jobs/{long_id}")
    expect(page.locator("#state")).to_have_text("cancelled", timeout=120_000)
    page.wait_for_selector("#retry")
    with live.client(live.key_a) as c:
        assert c.get(f"/v1/jobs/{long_id}").json()["status"] == "cancelled"

    # --- HTML in what users wrote shows as text, and no script ran
    page.goto(f"{live.url}/ui/jobs/{live.report_job}")
    assert json.dumps(HTML_PAYLOAD) in page.inner_text("#params")  # the JSON, as text
    page.goto(f"{live.url}/ui/systems/{live.system_id}")
    assert page.inner_text("#system-name") == HTML_PAYLOAD
    assert HTML_PAYLOAD in page.inner_text("#pdb-header")
    assert page.locator("#residues tbody tr").count() == 3
    page.goto(f"{live.url}/ui/jobs")
    shot(page, "web-jobs.png")
    assert page.problems == [], page.problems

    # --- another key sees none of it
    other = new_page(browser, live, live.key_b)
    listing = other.inner_text("#jobs")
    assert all(j not in listing for j in (job_id, long_id, live.report_job))
    assert "No jobs" in listing
    r = other.goto(f"{live.url}/ui/jobs/{job_id}")
    assert r.status == 404
    r = other.goto(f"{live.url}/ui/systems/{live.system_id}")
    assert r.status == 404
    other.context.close()

    # --- logging out ends the session
    page.click(".logout button")
    page.wait_for_url(f"{live.url}/ui/login")
    page.goto(f"{live.url}/ui/jobs")
    assert "/ui/login" in page.url
    context.close()


def test_no_key_in_any_url_or_access_log(live):
    """The login is a POST body; the server logs paths only."""
    with httpx.Client(base_url=live.url) as c:
        r = c.get("/ui/login")
        assert live.key_a not in str(r.url)
