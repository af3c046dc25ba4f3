"""Schemathesis over the whole OpenAPI document, against the ASGI app in-process.

Every operation gets bounded, derandomized examples generated from the schema (positive data:
what the schema says is valid, and negative data: what it says is not). Asserted: no 5xx, every
status is one the operation documents, every response body and content type matches the
documented schema. No worker runs (``executor="none"``), so submitted jobs stay queued and no
science runs. Time: about 30 s on 2 cores.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
import torch
from _server_fixtures import ADMIN, ADP, settings_for
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server.app import create_app

torch.set_num_threads(1)

# one app for the module: built at import, because schemathesis parametrizes at collection
_STATE = Path(tempfile.mkdtemp(prefix="boltzgen-fuzz-"))
APP = create_app(settings_for(_STATE, max_active_jobs_per_key=10_000, max_body_bytes=200_000))
_, USER_KEY = APP.state.store.create_key("fuzzer")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)

# real resources of the fuzzing key, so generated requests also reach the code behind a found
# resource (job parameters validated against a real system, a real job read or cancelled)
with TestClient(APP) as _c:
    _h = {"Authorization": f"Bearer {USER_KEY}"}
    SYSTEM_ID = _c.post("/v1/systems", json={"pdb": ADP.read_text()}, headers=_h).json()["id"]
    JOB_ID = _c.post(
        "/v1/jobs", json={"kind": "energy", "system_id": SYSTEM_ID}, headers=_h
    ).json()["id"]
REAL_IDS = {"system_id": SYSTEM_ID, "job_id": JOB_ID}
CALLS: list[tuple[str, str, int]] = []  # (method, path template, status) of every case

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 12  # per operation and mode; ~26 operations


def key_for(case) -> str:
    """The admin key for /v1/keys (else every case is a 403), a plain user key elsewhere."""
    return ADMIN if case.path.startswith("/v1/keys") else USER_KEY


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_schema(case):
    if isinstance(case.body, dict) and "system_id" in case.body:
        case.body["system_id"] = SYSTEM_ID
    # every other case of a path with a resource id gets the real one (reads and cancels only:
    # deleting the fixtures would end that; an event stream of a queued job never ends)
    if case.method in ("GET", "POST") and not case.path.endswith("/events") and len(CALLS) % 2:
        for name in set(REAL_IDS) & set(case.path_parameters or {}):
            case.path_parameters[name] = REAL_IDS[name]
    r = case.call_and_validate(headers={"Authorization": f"Bearer {key_for(case)}"}, checks=CHECKS)
    CALLS.append((case.method, case.path, r.status_code))


def test_zz_fuzz_summary():
    """Runs after the fuzz cases (file order): they ran, and reached the API's real paths."""
    import collections

    import pytest

    if not CALLS:
        pytest.skip("the fuzz cases did not run (deselected)")
    statuses = collections.Counter(status for _, _, status in CALLS)
    print(f"schemathesis: {len(CALLS)} cases, statuses {dict(sorted(statuses.items()))}")
    assert not [c for c in CALLS if c[2] >= 500]
    assert len(CALLS) >= 500
    assert statuses[202] > 0 and statuses[200] > 0  # accepted jobs and successful reads too
