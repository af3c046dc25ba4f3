"""The web pages (``server.web``) through TestClient: every page's status codes, the login
and its session cookie, CSRF refusal, per-key isolation, escaping of everything a user
wrote (system names, PDB remarks, job parameters, report.md), the security and cache
headers, the report with its figures and verdicts, and links behind a path prefix."""

from __future__ import annotations

import hashlib
import re
import time
import tomllib
from pathlib import Path

import pytest
from _server_fixtures import ADMIN, ADP, settings_for
from _web_fixtures import HTML_PAYLOAD, csrf_of, finish_job, login, pipeline_files
from fastapi.testclient import TestClient

from server.app import create_app

ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """An API-only app (no workers) with two keys; key A owns a system, a finished pipeline
    job with a report, a running job, and a model."""
    tmp = tmp_path_factory.mktemp("web")
    app = create_app(settings_for(tmp))
    store = app.state.store
    id_a, key_a = store.create_key("a")
    id_b, key_b = store.create_key("b")
    pdb = f"REMARK   1 {HTML_PAYLOAD}\n" + ADP.read_text()
    api = TestClient(app, headers={"Authorization": f"Bearer {key_a}"})
    r = api.post("/v1/systems", json={"pdb": pdb, "name": HTML_PAYLOAD})
    assert r.status_code == 201, r.text
    system_id = r.json()["id"]
    report_job = finish_job(
        store,
        id_a,
        pipeline_files(tmp / "run"),
        client_params={"note": HTML_PAYLOAD, "budget_minutes": 1},
        system_id=system_id,
        model=True,
    )
    model_id = api.get("/v1/models").json()["items"][0]["id"]
    running = store.create_job(id_a, "simulate", {}, max_attempts=1, client_params={"n_steps": 9})
    return {
        "app": app,
        "store": store,
        "key_a": key_a,
        "key_b": key_b,
        "system": system_id,
        "report_job": report_job,
        "running": running["id"],
        "model": model_id,
    }


def client_for(env, key: str | None, **kwargs) -> TestClient:
    c = TestClient(env["app"], **kwargs)
    if key is not None:
        login(c, key, kwargs.get("root_path", ""))
    return c


@pytest.fixture
def a(env):
    return client_for(env, env["key_a"])


def pages(env) -> list[str]:
    return [
        "/ui/jobs",
        "/ui/jobs?status=succeeded",
        f"/ui/jobs/{env['report_job']}",
        f"/ui/jobs/{env['report_job']}/report",
        f"/ui/jobs/{env['running']}",
        "/ui/systems",
        f"/ui/systems/{env['system']}",
        "/ui/models",
        f"/ui/models/{env['model']}",
    ]


def test_pages_need_a_login_and_redirect_to_it(env):
    c = client_for(env, None)
    for path in pages(env):
        r = c.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/ui/login?next=/ui/"), path
    for script_url in ("panel", "events"):  # fetched by the page's script: no redirect
        r = c.get(f"/ui/jobs/{env['report_job']}/{script_url}")
        assert r.status_code == 401, script_url
    assert c.get("/ui/jobs/rows").status_code == 401
    assert c.get("/ui", follow_redirects=False).headers["location"] == "/ui/jobs"


def test_every_page_answers_200_with_security_headers(env, a):
    for path in pages(env):
        r = a.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp, path
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["cache-control"] == "no-store"
        # no inline script or style attribute anywhere (the CSP would block them)
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), path
        assert " style=" not in r.text and " onclick=" not in r.text.lower(), path


def test_job_list_rows_for_the_refresh(env, a):
    page = a.get("/ui/jobs?status=queued").text
    rows_url = re.search(r'data-rows="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert rows_url == "/ui/jobs/rows?status=queued&limit=50"
    rows = a.get(rows_url)
    assert rows.status_code == 200 and env["running"] in rows.text
    assert env["report_job"] not in rows.text and "<html" not in rows.text


def test_not_found_and_bad_input_are_html_pages_api_stays_json(env, a):
    for path, code in [
        ("/ui/jobs/job_nope", 404),
        ("/ui/systems/sys_nope", 404),
        ("/ui/models/mdl_nope", 404),
        ("/ui/artifacts/art_nope/content", 404),
        (f"/ui/jobs/{env['running']}/report", 404),
        ("/ui/no-such-page", 404),
        ("/ui/jobs?status=bogus", 422),
        ("/ui/jobs?cursor=!!", 422),
        ("/ui/jobs?limit=0", 422),
    ]:
        r = a.get(path)
        assert r.status_code == code, (path, r.text[:200])
        assert r.headers["content-type"].startswith("text/html"), path
        assert r.headers["content-security-policy"]
    r = a.get("/v1/jobs/job_nope")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_login_cookie_is_httponly_strict_expiring_and_holds_no_key(env):
    c = TestClient(env["app"])
    r = c.get("/ui/login")
    token = csrf_of(r.text)
    r = c.post(
        "/ui/login",
        data={"csrf": token, "key": env["key_a"], "next": "/ui/jobs"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = next(
        v for k, v in r.headers.multi_items() if k == "set-cookie" and "boltzgen_session=" in v
    )
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "max-age=28800" in low
    assert "path=/ui" in low
    assert env["key_a"] not in cookie and env["key_a"] not in r.headers["location"]
    # a wrong key is refused on the form; so is a login without the form's token
    fresh = TestClient(env["app"])
    r = fresh.get("/ui/login")
    bad = fresh.post("/ui/login", data={"csrf": csrf_of(r.text), "key": "bgk_nope"})
    assert bad.status_code == 401 and "unknown or revoked" in bad.text
    assert "bgk_nope" not in bad.text  # the form never echoes a key
    fresh = TestClient(env["app"])
    r = fresh.post("/ui/login", data={"csrf": "x", "key": env["key_a"]}, follow_redirects=False)
    assert r.status_code == 403


def test_forged_or_tampered_session_cookie_is_refused(env, a):
    token = a.cookies.get("boltzgen_session")
    body, mac = token.split(".")
    c = TestClient(env["app"])
    for forged in (f"{body}.{mac[:-2]}xx", body, f"{body[:-3]}AAA.{mac}", "garbage"):
        c.cookies.set("boltzgen_session", forged, path="/ui")
        assert c.get("/ui/jobs", follow_redirects=False).status_code == 303, forged
        c.cookies.clear()


def test_an_expired_session_is_refused(env):
    signer = env["app"].state.web_signer
    digest = hashlib.sha256(env["key_a"].encode()).hexdigest()
    c = TestClient(env["app"])
    for exp, code in ((time.time() - 1, 303), (time.time() + 60, 200)):
        token = signer.dumps("session", {"kh": digest, "exp": exp, "csrf": "t"})
        c.cookies.set("boltzgen_session", token, path="/ui")
        assert c.get("/ui/jobs", follow_redirects=False).status_code == code
        c.cookies.clear()
    # a token signed for another purpose (the login form's) is not a session
    token = signer.dumps("login", {"kh": digest, "exp": time.time() + 60, "csrf": "t"})
    c.cookies.set("boltzgen_session", token, path="/ui")
    assert c.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_revoking_the_key_ends_its_sessions(env):
    store = env["store"]
    key_id, key = store.create_key("short-lived")
    c = client_for(env, key)
    assert c.get("/ui/jobs").status_code == 200
    admin = TestClient(env["app"], headers={"Authorization": f"Bearer {ADMIN}"})
    assert admin.delete(f"/v1/keys/{key_id}").status_code in (200, 204)
    assert c.get("/ui/jobs", follow_redirects=False).status_code == 303


def test_state_changing_forms_refuse_missing_wrong_or_cross_site_tokens(env, a):
    store = env["store"]
    job = store.create_job(
        store.lookup_key(env["key_a"]), "simulate", {}, max_attempts=1, client_params={}
    )
    url = f"/ui/jobs/{job['id']}/cancel"
    page = a.get(f"/ui/jobs/{job['id']}")
    token = csrf_of(page.text)
    for data, headers in [
        ({}, {}),
        ({"csrf": "wrong"}, {}),
        ({"csrf": token}, {"Origin": "https://evil.example"}),
    ]:
        r = a.post(url, data=data, headers=headers, follow_redirects=False)
        assert r.status_code == 403, (data, headers)
        assert "CSRF" in r.text
    assert store.get_job(job["id"], None)["status"] == "queued"
    assert a.post("/ui/logout", data={}).status_code == 403
    for path in (f"/ui/jobs/{job['id']}/retry",):
        assert a.post(path, data={"csrf": "wrong"}).status_code == 403
    # the right token from the page, same origin: cancelled, back to the job page
    r = a.post(url, data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/ui/jobs/{job['id']}"
    assert store.get_job(job["id"], None)["status"] == "cancelled"


def test_retry_submits_the_same_job_again(env, a):
    store = env["store"]
    owner = store.lookup_key(env["key_a"])
    params = {"n_steps": 100, "report_interval": 10}
    job = store.create_job(
        owner, "simulate", {}, max_attempts=2, client_params=params, system_id=env["system"]
    )
    store.request_cancel(job["id"], owner)
    page = a.get(f"/ui/jobs/{job['id']}")
    assert 'id="retry"' in page.text and 'id="cancel"' not in page.text
    r = a.post(
        f"/ui/jobs/{job['id']}/retry", data={"csrf": csrf_of(page.text)}, follow_redirects=False
    )
    assert r.status_code == 303
    new_id = r.headers["location"].rsplit("/", 1)[-1]
    new = store.get_job(new_id, owner)
    assert new_id != job["id"] and new["status"] == "queued" and new["kind"] == "simulate"
    assert new["client_params"] == params and new["system_id"] == env["system"]
    # a running job cannot be retried
    page = a.get(f"/ui/jobs/{new_id}")
    r = a.post(f"/ui/jobs/{new_id}/retry", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 409
    store.request_cancel(new_id, owner)


def test_another_key_sees_none_of_it(env):
    b = client_for(env, env["key_b"])
    listing = b.get("/ui/jobs").text
    for ident in (env["report_job"], env["running"], env["system"], env["model"]):
        assert ident not in listing
    for path in pages(env)[2:]:
        if path in ("/ui/systems", "/ui/models"):
            text = b.get(path).text
            assert env["system"] not in text and env["model"] not in text
            continue
        assert b.get(path).status_code == 404, path
    arts = TestClient(env["app"], headers={"Authorization": f"Bearer {env['key_a']}"}).get(
        f"/v1/jobs/{env['report_job']}/artifacts"
    )
    art = arts.json()["items"][0]["id"]
    assert b.get(f"/ui/artifacts/{art}/content").status_code == 404
    assert b.get(f"/ui/models/{env['model']}/content").status_code == 404
    page = b.get("/ui/jobs")
    r = b.post(f"/ui/jobs/{env['running']}/cancel", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 404
    assert env["store"].get_job(env["running"], None)["status"] == "queued"
    # the admin sees everything
    admin = client_for(env, ADMIN)
    assert env["report_job"] in admin.get("/ui/jobs").text


def test_html_written_by_users_shows_as_text(env, a):
    job = a.get(f"/ui/jobs/{env['report_job']}").text
    assert HTML_PAYLOAD not in job and ESCAPED in job  # the job parameter, system name link
    system = a.get(f"/ui/systems/{env['system']}").text
    assert HTML_PAYLOAD not in system and system.count(ESCAPED) >= 2  # name and REMARK
    assert "ACE" in system and "NME" in system and ">CA<" in system  # residues and atoms
    assert env["report_job"] in system  # the jobs that used it
    report = a.get(f"/ui/jobs/{env['report_job']}/report").text
    assert HTML_PAYLOAD not in report and "&lt;script&gt;" in report
    assert 'href="javascript:' not in report
    listing = a.get("/ui/systems").text
    assert HTML_PAYLOAD not in listing and ESCAPED in listing


def test_report_shows_figures_stage_table_and_verdicts(env, a):
    html = a.get(f"/ui/jobs/{env['report_job']}/report").text
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 5, srcs  # training, weights, ESS, Ramachandran, FES; outside one dropped
    assert all(s.startswith("/ui/artifacts/art_") and s.endswith("/content") for s in srcs)
    assert "example.com" not in html
    for src in srcs:
        r = a.get(src)
        assert r.status_code == 200 and r.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert r.headers["content-type"] == "image/png"
        assert r.headers["content-disposition"].startswith("inline")
        assert "sandbox" in r.headers["content-security-policy"]
    assert "<th>stage</th>" in html and "<td>training</td>" in html
    # verdicts beside the numbers: a column in the free-energy table and a summary table
    assert '<td class="verdict ok">reliable</td>' in html
    assert "not converged (ESS of the stratum below 50; error &gt; 1 kT)" in html
    assert 'id="verdicts"' in html and "free_energies.psi:2" in html
    assert "<td>a longer budget</td>" in html
    # a linked artifact is a download of the job's artifact
    assert re.search(r'<a href="/ui/artifacts/art_[^"]+/content"[^>]*>summary</a>', html)


def test_job_page_lists_artifacts_with_sizes_and_downloads(env, a):
    html = a.get(f"/ui/jobs/{env['report_job']}").text
    assert "report.md" in html and "plots/fes_phi_2.png" in html and "KiB" in html
    assert 'id="report-link"' in html and "half way" in html  # the log tail
    link = re.search(r'href="(/ui/artifacts/[^"]+)" download>summary.json', html).group(1)
    r = a.get(link)
    assert r.status_code == 200 and r.json()["ess"] == 0.41
    assert r.headers["content-disposition"].startswith("attachment")
    part = a.get(link, headers={"Range": "bytes=0-4"})
    assert part.status_code == 206 and part.content == b'{"ess'
    model = a.get(f"/ui/models/{env['model']}/content")
    assert model.status_code == 200 and model.content == b"not really a model"


def test_event_stream_of_a_finished_job(env, a):
    with a.stream("GET", f"/ui/jobs/{env['report_job']}/events") as s:
        assert s.headers["content-type"].startswith("text/event-stream")
        body = "".join(s.iter_text())
    assert "event: progress" in body and '"status": "succeeded"' in body


def test_static_files_are_cached_and_have_no_inline_code(env):
    c = TestClient(env["app"])
    page = c.get("/ui/login").text
    js = re.search(r'<script src="(/ui/static/app\.js\?v=\w+)"', page).group(1)
    r = c.get(js)
    assert r.status_code == 200 and "EventSource" in r.text
    assert "max-age=86400" in r.headers["cache-control"] and r.headers.get("etag")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert ".innerHTML = await response.text()" in r.text  # only server-rendered HTML
    assert c.get("/ui/static/app.css").status_code == 200


@pytest.mark.parametrize("how", ["root_path", "x-forwarded-prefix"])
def test_links_carry_the_path_prefix(env, how):
    if how == "root_path":
        c = TestClient(env["app"], root_path="/boltzgen")
        base = "/boltzgen"
    else:
        c = TestClient(env["app"], headers={"X-Forwarded-Prefix": "/boltzgen"})
        base = ""
    r = c.get(f"{base}/ui/jobs", follow_redirects=False)
    assert r.headers["location"] == "/boltzgen/ui/login?next=/boltzgen/ui/jobs"
    r = c.get(f"{base}/ui/login")
    assert 'action="/boltzgen/ui/login"' in r.text and 'href="/boltzgen/ui/static/app.css' in r.text
    cookie = r.headers["set-cookie"].lower()
    assert "path=/boltzgen/ui" in cookie
    if how == "root_path":  # TestClient keeps cookies by path: log in fully
        login(c, env["key_a"], base)
        html = c.get(f"{base}/ui/jobs/{env['report_job']}/report").text
        assert re.search(r'<img src="/boltzgen/ui/artifacts/art_\w+/content"', html)
        assert 'href="/ui/' not in html and 'src="/ui/' not in html


def test_a_forwarded_prefix_that_is_not_a_path_is_ignored(env):
    c = TestClient(env["app"], headers={"X-Forwarded-Prefix": '/x"><script>'})
    r = c.get("/ui/login")
    assert 'action="/ui/login"' in r.text and "<script>" not in r.text.split("</head>")[1]


def test_login_next_is_never_an_open_redirect(env):
    c = TestClient(env["app"])
    for nxt in ("https://evil.example/", "//evil.example/ui", "/v1/jobs", "/ui/../v1"):
        r = c.get("/ui/login")
        r = c.post(
            "/ui/login",
            data={"csrf": csrf_of(r.text), "key": env["key_a"], "next": nxt},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/ui/jobs", nxt
        c.cookies.clear()


def test_without_api_keys_the_login_form_just_continues(tmp_path):
    app = create_app(settings_for(tmp_path, auth=False))
    c = TestClient(app)
    r = c.get("/ui/login")
    assert "without API keys" in r.text
    r = c.post("/ui/login", data={"csrf": csrf_of(r.text)}, follow_redirects=False)
    assert r.status_code == 303
    assert c.get("/ui/jobs").status_code == 200


def test_templates_and_static_files_are_package_data():
    """The wheel (and so the Docker image) carries every template and static file."""
    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["server.web"]
    web = root / "server" / "web"
    files = [p for d in ("templates", "static") for p in (web / d).iterdir() if p.is_file()]
    assert len(files) > 5
    missing = [p for p in files if not any(p.relative_to(web).match(g) for g in globs)]
    assert not missing, missing


def test_report_renderer_on_its_own():
    from server.web.report import render_report, verdicts

    urls = {"plots/a.png": "/ui/artifacts/art_1/content"}
    md = (
        "<b>bold?</b>\n\n![a](plots/a.png) ![up](../secret.png) ![abs](/etc/x.png)\n\n"
        "| CV | dF / kT |\n|---|---|\n| phi:2 | 1.0 |\n| psi:2 | 2.0 |\n"
    )
    summary = {
        "free_energies": {
            "phi:2": {
                "df_kT": 1.0,
                "err_kT": 0.1,
                "verdict": {"verdict": "not converged", "reasons": ["few samples"]},
            },
        },
        "ess": {"value": 0.3, "verdict": "reliable"},
    }
    html = render_report(md, urls.get, summary)
    assert "&lt;b&gt;bold?&lt;/b&gt;" in html and "<b>" not in html
    assert html.count("<img") == 1 and 'src="/ui/artifacts/art_1/content"' in html
    assert "secret" not in html.split("<img")[1].split(">")[0]  # ../ never becomes a URL
    assert '<td class="verdict bad" title="few samples">not converged (few samples)</td>' in html
    assert "<td>-</td>" in html  # psi:2 has no verdict
    found = {v.where: v for v in verdicts(summary)}
    assert found["free_energies.phi:2"].value == "dF 1 +- 0.1 kT"
    assert found["ess"].reliable and not found["free_energies.phi:2"].reliable
    assert render_report(md, urls.get, None).count("verdict") == 0
