"""pip-audit of the installed dependency set (slow: it asks a vulnerability service about every
package). ``pip install -e '.[audit]'`` installs pip-audit. Fails on any known vulnerability;
skips, saying so, when the service could audit nothing (no route to it from this machine)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_no_known_vulnerabilities(tmp_path):
    exe = Path(sys.executable).with_name("pip-audit")
    exe = str(exe) if exe.exists() else shutil.which("pip-audit")
    if exe is None:
        pytest.skip("pip-audit not installed (pip install -e '.[audit]')")
    out = tmp_path / "audit.json"
    r = subprocess.run(
        [exe, "--progress-spinner", "off", "-f", "json", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if not out.exists():
        pytest.fail(f"pip-audit produced no report (exit {r.returncode}): {r.stderr[-2000:]}")
    deps = json.loads(out.read_text())["dependencies"]
    audited = [d for d in deps if "skip_reason" not in d]
    vulnerable = {
        f"{d['name']}=={d['version']}": [v["id"] for v in d["vulns"]]
        for d in audited
        if d.get("vulns")
    }
    assert not vulnerable, vulnerable
    if not audited:
        pytest.skip(
            f"pip-audit could audit none of {len(deps)} packages (vulnerability service "
            f"unreachable?): {deps[0].get('skip_reason') if deps else 'no packages'}"
        )
    print(
        f"pip-audit: {len(audited)} packages audited, {len(deps) - len(audited)} skipped, 0 known vulnerabilities"
    )
