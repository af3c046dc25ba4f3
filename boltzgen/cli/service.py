"""Service commands: ``serve`` and ``worker`` (need the ``server`` extra) and the client side
``submit``, ``status``, ``wait``, ``download`` (the SDK, ``boltzgen.client``; ``keys`` is in
``boltzgen.cli.keys``). A client command that fails prints one line (no traceback) and exits
non-zero: 1 for an API error or an unreachable server, 2 for bad usage.

The library never imports ``server`` statically: ``serve`` and ``worker`` import it by name at
run time, with a clear message if it is not installed. Both build the server's ``Settings``
once (``BOLTZGEN_*`` environment, overridden by the command-line options) and pass that object
to the app or the worker pool, instead of writing options back into the environment.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from boltzgen.constants import DEFAULT_FORCEFIELD

URL = Annotated[
    str | None, typer.Option("--url", envvar="BOLTZGEN_URL", help="server URL (default local)")
]
KEY = Annotated[str | None, typer.Option("--api-key", envvar="BOLTZGEN_API_KEY", help="API key")]
ADMIN_KEY_FILE = "admin.key"  # in the state dir: the generated admin key, mode 0600
CLIENT_RETRIES = 3  # connection errors: 0.25 + 0.5 + 1 s, then give up with one line


def _server_module(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        typer.echo(
            f"the service needs the server extra: pip install 'boltzgen[server]' ({exc})",
            err=True,
        )
        raise typer.Exit(2) from None


def serve(
    host: Annotated[str, typer.Option(help="bind address", envvar="BOLTZGEN_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port", envvar="BOLTZGEN_PORT")] = 8000,
    workers: Annotated[
        int,
        typer.Option(help="concurrent job processes (0: API only)", envvar="BOLTZGEN_WORKERS"),
    ] = 1,
    state_dir: Annotated[
        Path | None, typer.Option(help="store, jobs, artifacts (BOLTZGEN_STATE_DIR)")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="no API keys (local use only)")
    ] = False,
) -> None:
    """Run the REST API (uvicorn) with an embedded worker pool and a SQLite store."""
    from functools import partial

    from pydantic import SecretStr

    app_module = _server_module("server.app")
    import uvicorn

    overrides: dict = {"workers": workers}
    if state_dir is not None:
        overrides["state_dir"] = state_dir
    if no_auth:
        overrides["auth"] = False
    settings = _server_module("server.settings").Settings(**overrides)
    if settings.auth and not (settings.admin_key and settings.admin_key.get_secret_value()):
        key = _persistent_admin_key(Path(settings.state_dir))
        settings = settings.model_copy(update={"admin_key": SecretStr(key)})
    factory = partial(app_module.server_app, settings)
    uvicorn.run(factory, factory=True, host=host, port=port, log_level="info")


def _persistent_admin_key(state_dir: Path) -> str:
    """The admin key kept in ``state_dir/admin.key`` (mode 0600), generated on first use, so
    it stays the same across restarts. BOLTZGEN_ADMIN_KEY, when set, wins over the file."""
    path = state_dir / ADMIN_KEY_FILE
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if not key:
            typer.echo(f"error: {path} is empty; delete it to generate a new key", err=True)
            raise typer.Exit(2) from None
        if path.stat().st_mode & 0o077:
            typer.echo(f"warning: {path} is readable by others; chmod 600 it", err=True)
        typer.echo(
            f"admin key: read from {path} (BOLTZGEN_ADMIN_KEY overrides it); "
            f'use it with --api-key "$(cat {path})"',
            err=True,
        )
        return key
    key = "bgk_admin_" + secrets.token_urlsafe(24)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    typer.echo(
        f"BOLTZGEN_ADMIN_KEY not set; generated an admin key and saved it in {path} "
        f"(mode 0600, kept across restarts): {key}",
        err=True,
    )
    return key


def worker(
    slots: Annotated[int, typer.Option(help="concurrent jobs", envvar="BOLTZGEN_WORKERS")] = 1,
    executor: Annotated[
        str, typer.Option(help="local | ray", envvar="BOLTZGEN_EXECUTOR")
    ] = "local",
) -> None:
    """Run a standalone worker pool against the store in BOLTZGEN_DATABASE_URL/STATE_DIR."""
    worker_module = _server_module("server.runner.worker")
    settings = _server_module("server.settings").Settings(workers=slots, executor=executor)
    worker_module.main(settings)


def _hint(exc) -> str:
    """What to do about an API error, for the statuses a user can fix."""
    status = getattr(exc, "status", None)
    if status == 401:
        return (
            " -- pass an API key with --api-key KEY or the BOLTZGEN_API_KEY environment "
            "variable (the admin key is in the server's state dir, file admin.key, unless "
            "BOLTZGEN_ADMIN_KEY is set)"
        )
    if status == 403:
        return " -- this needs the admin key (--api-key or BOLTZGEN_API_KEY)"
    return ""


def friendly_errors(fn):
    """Print library/API/connection errors as one line and exit 1 instead of a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import httpx

        from boltzgen.errors import BoltzgenError

        try:
            return fn(*args, **kwargs)
        except BoltzgenError as exc:
            typer.echo(f"error: {exc}{_hint(exc)}", err=True)
            raise typer.Exit(1) from None
        except httpx.TransportError as exc:  # refused, timed out, reset, bad URL
            where = f"at {_origin(exc)} " if _has_request(exc) else ""
            typer.echo(
                f"error: no answer from the boltzgen server {where}({type(exc).__name__}: "
                f"{exc}); start one with 'boltzgen serve' or pass --url / BOLTZGEN_URL",
                err=True,
            )
            raise typer.Exit(1) from None
        except httpx.HTTPError as exc:  # e.g. an invalid URL
            typer.echo(f"error: {type(exc).__name__}: {exc}", err=True)
            raise typer.Exit(1) from None
        except (OSError, ValueError) as exc:  # unreadable file, bad PDB argument, bad JSON
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper


def _origin(exc) -> str:
    url = exc.request.url
    return f"{url.scheme}://{url.netloc.decode()}"


def _has_request(exc) -> bool:
    try:
        exc.request  # noqa: B018 -- raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True


def service_client(url: str | None, key: str | None):
    """The SDK client of a CLI command (connection errors retried ``CLIENT_RETRIES`` times)."""
    from boltzgen.client import Client

    return Client(url, api_key=key, max_retries=CLIENT_RETRIES)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _follow(client, job_id: str, timeout: float | None):
    """Wait for a job with a rich progress bar; returns the final JobInfo."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress(
        TextColumn("[bold]{task.fields[job]}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]} {task.fields[msg]}"),
        transient=False,
    ) as bar:
        task = bar.add_task("job", total=1.0, job=job_id, status="", msg="")
        while True:
            job = client.get_job(job_id)
            bar.update(task, completed=job.progress, status=job.status, msg=job.message[:40])
            if job.done:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise typer.Exit(124)
            time.sleep(1.0)


@friendly_errors
def submit(
    kind: Annotated[str, typer.Argument(help="job kind (see GET /v1/kinds)")],
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="KEY=VALUE (VALUE parsed as JSON)")
    ] = None,
    params_json: Annotated[str | None, typer.Option(help="parameters as JSON or @file")] = None,
    system_id: Annotated[str | None, typer.Option(help="an uploaded system")] = None,
    pdb: Annotated[Path | None, typer.Option(help="upload this PDB first")] = None,
    solvent: Annotated[str, typer.Option(help="with --pdb")] = "vacuum",
    temperature: Annotated[float, typer.Option(help="with --pdb, K")] = 300.0,
    forcefield: Annotated[
        str, typer.Option(help="with --pdb, comma-separated")
    ] = DEFAULT_FORCEFIELD[0],
    model_id: Annotated[str | None, typer.Option(help="a trained model")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="makes resubmission safe")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job to its end")] = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Submit a job; prints its id (and follows it with --wait)."""
    params: dict = {}
    if params_json:
        text = Path(params_json[1:]).read_text() if params_json.startswith("@") else params_json
        params.update(json.loads(text))
    for item in param or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--param {item!r}: expected KEY=VALUE")
        params[k] = _parse_value(v)
    with service_client(url, api_key) as c:
        if pdb is not None:
            system = c.upload_system(
                pdb,
                solvent=solvent,
                temperature=temperature,
                forcefield=[f for f in forcefield.split(",") if f],
            )
            system_id = system.id
            typer.echo(f"system {system.id} ({system.n_atoms} atoms)", err=True)
        job = c.submit(
            kind,
            system_id=system_id,
            model_id=model_id,
            params=params,
            idempotency_key=idempotency_key,
        )
        typer.echo(job.id)
        if wait:
            job = _follow(c, job.id, None)
            _print_json(job.model_dump(mode="json", include={"status", "result", "error"}))
            if job.status != "succeeded":
                raise typer.Exit(1)


@friendly_errors
def status(
    job_id: Annotated[str | None, typer.Argument(help="a job; omit to list recent jobs")] = None,
    state: Annotated[
        str | None, typer.Option("--status", help="filter, e.g. queued,running")
    ] = None,
    limit: Annotated[int, typer.Option(help="jobs to list")] = 20,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Show one job (JSON) or a table of recent jobs."""
    with service_client(url, api_key) as c:
        if job_id:
            _print_json(c.get_job(job_id).model_dump(mode="json"))
            return
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "kind", "status", "progress", "attempts", "created")
        for j in c.list_jobs(status=state, limit=limit).items:
            row = (j.id, j.kind, j.status, f"{j.progress:.0%}", str(j.attempts))
            table.add_row(*row, f"{j.created_at:%F %T}")
        Console(width=max(Console().width, 110)).print(table)


@friendly_errors
def wait_cmd(
    job_id: Annotated[str, typer.Argument(help="the job")],
    timeout: Annotated[float | None, typer.Option(help="give up after this many seconds")] = None,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Follow a job with a progress bar; exit 0 if it succeeded, 1 otherwise."""
    with service_client(url, api_key) as c:
        job = _follow(c, job_id, timeout)
        _print_json(job.model_dump(mode="json", include={"status", "result", "error"}))
        if job.status != "succeeded":
            raise typer.Exit(1)


@friendly_errors
def download(
    job_id: Annotated[str, typer.Argument(help="the job")],
    name: Annotated[str | None, typer.Option(help="one artifact by name (default: all)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="directory")] = Path("."),
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Download a job's artifacts (resumes interrupted downloads)."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    with service_client(url, api_key) as c:
        arts = [c.artifact(job_id, name)] if name else c.artifacts(job_id)
        if not arts:
            typer.echo(f"job {job_id} has no artifacts", err=True)
            raise typer.Exit(1)
        for a in tqdm(arts, unit="file", file=sys.stderr, disable=len(arts) < 2):
            typer.echo(str(c.download(a, out)))
