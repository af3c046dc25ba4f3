"""Helpers for the web-page tests: a logged-in TestClient, a finished job with files
registered through the job queue (as the worker registers them), and the artifact set of a
pipeline run made here (report.md, summary.json with verdicts, real matplotlib figures) for
a report page that does not wait for a pipeline run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from boltzgen import plots
from server.storage.layout import media_type
from server.storage.queue import JobQueue
from server.storage.store import Store

HTML_PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)>'
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    m = CSRF_FIELD.search(html)
    assert m, "no CSRF field in the page"
    return m.group(1)


def login(client, key: str, base: str = "") -> None:
    """Log ``client`` (TestClient or httpx) in through the login form."""
    r = client.get(f"{base}/ui/login")
    assert r.status_code == 200, r.text
    r = client.post(
        f"{base}/ui/login",
        data={"csrf": csrf_of(r.text), "key": key, "next": f"{base}/ui/jobs"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"{base}/ui/jobs", r.text


def pipeline_files(out: Path) -> Path:
    """A pipeline run's artifact set in ``out``: report.md (the pipeline's section layout,
    an HTML payload in it), summary.json (one reliable and one unconverged free energy) and
    the figures it shows (FES, Ramachandran, log-weights, ESS curve, training)."""
    rng = np.random.default_rng(0)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    phi, psi = rng.uniform(-np.pi, np.pi, (2, 2000))
    plots.ramachandran({"flow": (phi, psi, None)}, plot_dir / "ramachandran_2.png", bins=20)
    x = np.linspace(-np.pi, np.pi, 30)
    plots.free_energy_profile(
        {"phi:2": (x, 1 + np.cos(x), 0.1 + 0 * x)}, plot_dir / "fes_phi_2.png"
    )
    plots.log_weight_histogram(rng.normal(size=500), plot_dir / "log_weights.png", ess=0.4)
    plots.training_curves({"train_nll": [3.0, 2.0, 1.5]}, out / "training.png")
    plots.training_curves({"ess": [0.2, 0.3, 0.35]}, plot_dir / "ess_curve.png")
    summary = {
        "ess": 0.41,
        "free_energies": {
            "phi:2": {
                "df_kT": 3.91,
                "err_kT": 0.12,
                "verdict": "reliable",
                "reasons": [],
            },
            "psi:2": {  # the object form (boltzgen.diagnostics.Verdict.to_dict())
                "df_kT": -0.7,
                "err_kT": 1.9,
                "verdict": {
                    "status": "not converged",
                    "reasons": ["ESS of the stratum below 50", "error > 1 kT"],
                    "codes": ["too_few_particles"],
                    "advice": ["a longer budget"],
                },
            },
        },
    }
    (out / "summary.json").write_text(json.dumps(summary))
    report = f"""# boltzgen run: {HTML_PAYLOAD}

22 atoms, 3 residues. **ESS 41.00 %** of 1,000 samples.

## Budget and wall time

| stage | share | budget (s) | wall time (s) | from checkpoint |
|---|---|---|---|---|
| data | 30% | 18 | 17.2 | no |
| training | 50% | 30 | 29.0 | no |

![training](training.png)

## Samples and weights

![log-weights](plots/log_weights.png)

![ESS curve](plots/ess_curve.png)

![outside](https://example.com/tracker.png)

## Free energies

| CV | dF / kT | method | dF data / kT | CV >= 0 in data (frames) |
|---|---|---|---|---|
| phi:2 | 3.91 +- 0.12 | refined | 3.7 +- 0.3 | 0.0200 |
| psi:2 | -0.7 +- 1.9 | reweighted | - | 0.5000 |

### Ramachandran plots

![residue 2](plots/ramachandran_2.png)

### Free-energy profiles (bands: bootstrap errors)

![phi:2](plots/fes_phi_2.png)

[summary](summary.json) · [evil](javascript:alert(1))
"""
    (out / "report.md").write_text(report)
    return out


def finish_job(
    store: Store,
    owner: str,
    files: Path | None,
    *,
    kind: str = "pipeline",
    client_params: dict[str, Any] | None = None,
    system_id: str | None = None,
    model: bool = False,
) -> str:
    """A job of ``owner`` taken and completed through the job queue with ``files`` (every
    file under the directory) as its artifacts, and a model when asked. The store must have
    no other runnable job (the queue takes the oldest)."""
    job = store.create_job(
        owner,
        kind,
        {},
        max_attempts=1,
        client_params=client_params or {},
        system_id=system_id,
    )
    queue = JobQueue(store)
    claimed = queue.claim("web-test", 60.0)
    assert claimed is not None and claimed["id"] == job["id"]
    queue.record_progress(job["id"], "web-test", claimed["attempts"], [(0.5, "half way")])
    rows = []
    for p in sorted(files.rglob("*")) if files else []:
        if p.is_file():
            rows.append(
                {
                    "name": p.relative_to(files).as_posix(),
                    "path": str(p),
                    "size": p.stat().st_size,
                    "media_type": media_type(p),
                }
            )
    model_row = None
    if model:
        path = (files or Path(".")) / "model.pt"
        path.write_bytes(b"not really a model")
        model_row = {"name": f"{kind}-{job['id']}", "path": str(path), "size": 18, "summary": {}}
    ok = queue.complete(job["id"], "web-test", claimed["attempts"], {"ok": 1}, rows, model_row)
    assert ok
    return job["id"]
