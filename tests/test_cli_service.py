"""The service commands of the CLI: one-line errors and non-zero exits when no server answers
or the key is missing/wrong, ``boltzgen keys create|list|revoke``, and the admin key that
``boltzgen serve`` generates once and keeps (mode 0600) in the state dir."""

from __future__ import annotations

import stat

import pytest
from _server_fixtures import ADMIN, LiveServer, free_port, settings_for
from typer.testing import CliRunner

from boltzgen.cli import app
from boltzgen.cli.service import _persistent_admin_key

DEAD = f"http://127.0.0.1:{free_port()}"  # nothing listens there

COMMANDS = [
    ["status"],
    ["status", "job_x"],
    ["submit", "energy", "--system-id", "sys_x"],
    ["wait", "job_x"],
    ["download", "job_x"],
    ["keys", "create", "bob"],
    ["keys", "list"],
    ["keys", "revoke", "key_x"],
]


def _run(args, env=None):
    env = {"BOLTZGEN_API_KEY": "", "BOLTZGEN_ADMIN_KEY": "", **(env or {})}
    return CliRunner().invoke(app, args, env=env)


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_no_server_is_one_line_and_exit_1(args):
    r = _run([*args, "--url", DEAD])
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no answer from the boltzgen server")
    assert "--url" in lines[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveServer(settings_for(tmp_path_factory.mktemp("cli"))) as srv:
        yield srv


def test_401_says_how_to_pass_a_key(live):
    r = _run(["status", "--url", live.url])
    assert r.exit_code == 1
    assert "401" in r.stderr and "--api-key" in r.stderr and "BOLTZGEN_API_KEY" in r.stderr
    r = _run(["status", "--url", live.url, "--api-key", "bgk_wrong"])
    assert r.exit_code == 1 and "--api-key" in r.stderr


def test_keys_create_list_revoke(live):
    env = {"BOLTZGEN_URL": live.url}
    r = _run(["keys", "create", "carol"], env=env)
    assert r.exit_code == 1 and "401" in r.stderr  # no admin key given
    r = _run(["keys", "create", "carol"], env=env | {"BOLTZGEN_ADMIN_KEY": ADMIN})
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    assert key.startswith("bgk_")
    # the new key works, but it is not the admin: keys commands are refused with a hint
    assert _run(["status"], env=env | {"BOLTZGEN_API_KEY": key}).exit_code == 0
    r = _run(["keys", "list", "--api-key", key], env=env)
    assert r.exit_code == 1 and "403" in r.stderr and "admin key" in r.stderr
    r = _run(["keys", "list", "--json", "--api-key", ADMIN], env=env)
    assert r.exit_code == 0, r.output
    import json

    listed = {k["name"]: k for k in json.loads(r.stdout)}
    assert listed["carol"]["revoked"] is False and "key" not in listed["carol"]
    key_id = listed["carol"]["id"]
    r = _run(["keys", "revoke", key_id, "--api-key", ADMIN], env=env)
    assert r.exit_code == 0, r.output
    r = _run(["status"], env=env | {"BOLTZGEN_API_KEY": key})  # refused at once
    assert r.exit_code == 1 and "revoked" in r.stderr
    r = _run(["keys", "revoke", "key_missing", "--api-key", ADMIN], env=env)
    assert r.exit_code == 1 and "404" in r.stderr
    r = _run(["keys", "list", "--api-key", ADMIN], env=env)
    assert r.exit_code == 0 and key_id in r.stdout


def test_generated_admin_key_is_kept_in_the_state_dir(tmp_path):
    state = tmp_path / "state"
    first = _persistent_admin_key(state)
    path = state / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first and first.startswith("bgk_admin_")
    assert _persistent_admin_key(state) == first  # a restart reads the same key
