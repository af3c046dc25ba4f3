"""The SDK: ``AsyncClient`` has every public method of ``Client`` with the same parameters
(as coroutines / async iterators), each written natively (no thread over a sync client), PDB
paths vs PDB text, resumed downloads, and the capped, logged, typed 429 handling. No server:
httpx.MockTransport."""

from __future__ import annotations

import asyncio
import inspect
import logging

import httpx
import pytest
from _server_fixtures import ADP

from boltzgen.client import AsyncClient, Client, RateLimitedError, public_methods

RENAMED = {"close": "aclose"}  # sync name -> async name


def _params(fn) -> list[tuple[str, object]]:
    return [(p.name, p.kind) for p in inspect.signature(fn).parameters.values()]


def test_async_client_has_every_client_method_with_the_same_parameters():
    sync, async_ = public_methods(Client), public_methods(AsyncClient)
    expected = {RENAMED.get(name, name) for name in sync}
    assert set(async_) == expected, (
        f"only in Client: {sorted(expected - set(async_))}; "
        f"only in AsyncClient: {sorted(set(async_) - expected)}"
    )
    for name, fn in sync.items():
        afn = async_[RENAMED.get(name, name)]
        if inspect.isgeneratorfunction(fn):
            assert inspect.isasyncgenfunction(afn), f"AsyncClient.{name} must be async iterator"
        else:
            assert inspect.iscoroutinefunction(afn), f"AsyncClient.{name} is not a coroutine"
        if name not in RENAMED:
            assert _params(afn) == _params(fn), name


def test_async_client_is_written_natively():
    """Every coroutine is AsyncClient's own (module ``boltzgen.client.aio``), none generated
    at import or run on a synchronous Client in a thread."""
    for name, fn in public_methods(AsyncClient).items():
        assert fn.__module__ == "boltzgen.client.aio", name
        assert fn.__qualname__ == f"AsyncClient.{name}", name
    assert not any(isinstance(v, Client) for v in vars(AsyncClient("http://test")).values())


def _job(status="queued") -> dict:
    return {
        "id": "job_a",
        "kind": "energy",
        "status": status,
        "progress": 0.0,
        "attempts": 0,
        "max_attempts": 3,
        "created_at": "2026-11-23T00:00:00Z",
        "updated_at": "2026-11-23T00:00:00Z",
    }


def test_async_ops_and_admin_methods():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers.get("authorization")))
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if request.url.path == "/v1/keys":
            return httpx.Response(
                200,
                json=[
                    {
                        "id": "key_1",
                        "name": "a",
                        "revoked": False,
                        "created_at": "2026-11-23T00:00:00Z",
                    }
                ],
            )
        return httpx.Response(204)

    async def run():
        async with AsyncClient(
            "http://test", api_key="k", transport=httpx.MockTransport(handler)
        ) as c:
            return await c.health(), await c.list_keys(), await c.revoke_key("key_1")

    health, keys, revoked = asyncio.run(run())
    assert health == {"status": "ok"} and keys[0].id == "key_1" and revoked is None
    assert ("DELETE", "/v1/keys/key_1", "Bearer k") in seen


def test_upload_system_path_or_text(tmp_path):
    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        import json

        bodies.append(json.loads(request.content)["pdb"])
        return httpx.Response(
            201,
            json={
                "id": "sys_1",
                "name": "x",
                "n_atoms": 22,
                "solvent": "vacuum",
                "temperature": 300.0,
                "forcefield": [],
                "created_at": "2026-11-23T00:00:00Z",
            },
        )

    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        for missing in ("typo.pdb", "TYPO.PDB", str(tmp_path / "nope"), "dir/file.txt"):
            with pytest.raises(FileNotFoundError, match="no such PDB file"):
                c.upload_system(missing)
        with pytest.raises(FileNotFoundError):
            c.upload_system(tmp_path / "missing.pdb")  # a Path
        with pytest.raises(ValueError, match="neither an existing file nor PDB text"):
            c.upload_system("ATOM      1  N   ALA A   1")  # one line is not a PDB
        assert bodies == []  # nothing was sent
        c.upload_system(str(ADP))
        c.upload_system(ADP)
        c.upload_system(ADP.read_text())
    assert bodies == [ADP.read_text()] * 3


def test_429_wait_is_capped_logged_and_typed(caplog):
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(429, json={"title": "Too many"}, headers={"Retry-After": "0.2"})

    caplog.set_level(logging.WARNING, logger="boltzgen.client")
    c = Client("http://test", transport=httpx.MockTransport(handler), max_wait=0.5)
    with c, pytest.raises(RateLimitedError) as err:
        c.submit("energy", system_id="s")
    assert len(calls) == 3  # waited 0.2 + 0.2; a third wait would pass max_wait=0.5
    assert err.value.status == 429 and err.value.retry_after == pytest.approx(0.2)
    assert err.value.waited == pytest.approx(0.4)
    assert "max_wait" in str(err.value)
    waits = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(waits) == 2 and "HTTP 429" in waits[0].getMessage()
    # a Retry-After longer than the whole budget fails at once, without sleeping
    with Client("http://test", transport=httpx.MockTransport(handler), max_wait=0.1) as c:
        calls.clear()
        with pytest.raises(RateLimitedError):
            c.get_job("job_a")
    assert len(calls) == 1

    async def run():
        async with AsyncClient(
            "http://test", transport=httpx.MockTransport(handler), max_wait=0.3
        ) as c:
            await c.submit("energy", system_id="s")

    calls.clear()
    with pytest.raises(RateLimitedError):
        asyncio.run(run())
    assert len(calls) == 2


def test_async_iterators():
    pages = {None: (["a", "b"], "c1"), "c1": (["c"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            body = 'id: 1\nevent: status\ndata: {"status": "succeeded"}\n\n'
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        ids, nxt = pages[request.url.params.get("cursor")]
        items = [_job() | {"id": i} for i in ids]
        return httpx.Response(200, json={"items": items, "next_cursor": nxt})

    async def run():
        async with AsyncClient("http://test", transport=httpx.MockTransport(handler)) as c:
            jobs = [j.id async for j in c.iter_jobs(page_size=2)]
            events = [e async for e in c.events("job_a")]
            return jobs, events

    jobs, events = asyncio.run(run())
    assert jobs == ["a", "b", "c"]
    assert events == [{"id": "1", "event": "status", "data": {"status": "succeeded"}}]


def test_download_resumes_a_partial_file_in_both_clients(tmp_path):
    data = b"0123456789"
    ranges = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/artifacts/art_1":
            info = {"id": "art_1", "job_id": "job_a", "name": "out/x.bin", "size": len(data)}
            info |= {"media_type": "application/octet-stream", "created_at": "2026-11-23T00:00:00Z"}
            return httpx.Response(200, json=info)
        rng = request.headers.get("range")
        ranges.append(rng)
        if rng is None:
            return httpx.Response(200, content=data)
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        headers = {"content-range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        return httpx.Response(206, content=data[start:], headers=headers)

    def partial(dest):
        dest.with_name(dest.name + ".part").write_bytes(data[:4])
        return dest

    sync_dest, async_dest = partial(tmp_path / "s.bin"), partial(tmp_path / "a.bin")
    with Client("http://test", transport=httpx.MockTransport(handler)) as c:
        assert c.download("art_1", sync_dest) == sync_dest

    async def run():
        async with AsyncClient("http://test", transport=httpx.MockTransport(handler)) as c:
            return await c.download("art_1", async_dest)

    assert asyncio.run(run()) == async_dest
    assert sync_dest.read_bytes() == async_dest.read_bytes() == data
    assert ranges == ["bytes=4-", "bytes=4-"]


def test_both_clients_send_the_same_requests():
    """Client and AsyncClient build their requests in one place (``boltzgen.client.calls``):
    the same calls send the same method, path, query, body and Idempotency-Key."""
    import json

    def recorder(sent: list):
        def handler(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content) if request.content else None
            key = request.headers.get("idempotency-key")
            sent.append((request.method, request.url.path, request.url.query.decode(), body, key))
            if request.method == "DELETE":
                return httpx.Response(204)
            paged = request.url.path in ("/v1/jobs", "/v1/models", "/v1/systems")
            if paged and request.method == "GET":
                return httpx.Response(200, json={"items": [], "next_cursor": None})
            return httpx.Response(200 if request.method == "GET" else 202, json=_job("succeeded"))

        return handler

    ops = [
        ("submit", ("energy",), {"system_id": "s", "params": {"n": 1}, "idempotency_key": "k1"}),
        ("list_jobs", (["queued", "running"], "energy", "c1", 7), {}),
        ("list_systems", ("c2", 3), {}),
        ("list_models", (None, 5), {}),
        ("get_job", ("job_a",), {}),
        ("cancel", ("job_a",), {}),
        ("delete_job", ("job_a",), {}),
        ("cg_simulate", ("s", "a1", "ff1"), {"beads": "name CA", "idempotency_key": "k2"}),
        ("wait", ("job_a",), {"poll": 0}),
    ]
    sync_sent: list = []
    with Client("http://test", transport=httpx.MockTransport(recorder(sync_sent))) as c:
        for name, args, kwargs in ops:
            getattr(c, name)(*args, **kwargs)

    async def run(sent: list):
        async with AsyncClient("http://test", transport=httpx.MockTransport(recorder(sent))) as c:
            for name, args, kwargs in ops:
                await getattr(c, name)(*args, **kwargs)

    async_sent: list = []
    asyncio.run(run(async_sent))
    assert sync_sent == async_sent
    assert sync_sent[0] == (
        "POST",
        "/v1/jobs",
        "",
        {"kind": "energy", "params": {"n": 1}, "system_id": "s"},
        "k1",
    )
    assert sync_sent[1][2] == "limit=7&status=queued%2Crunning&kind=energy&cursor=c1"
    assert sync_sent[7][3]["params"]["forcefield"] == "ff1"
