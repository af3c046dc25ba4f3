"""The wire schemas of the boltzgen REST API (pydantic), shared by the server and the SDK.

One definition of what travels over HTTP, so the server's responses and the client's parsing
cannot drift apart. These are API schemas only: the server's storage rows (``server.storage.tables``)
are separate and converted explicitly (``server.http.convert``), so the database can change without
changing the API. Response models allow extra fields, so an older SDK reads a newer server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from boltzgen.constants import DEFAULT_FORCEFIELD

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


# The schema says what the server accepts (an outside fuzzer found "0" and [""] accepted by
# the document but refused by the server). A PDB has an atom record (checked here); the
# rest is in the document only, so the server's and the library's own checks still name the
# problem in their messages: a force field is an OpenMM XML file whose path segments do not
# start with a dot (so no ".."), solvent and constraints are the library's names.
PDB_RECORD = r"(^|\n)(ATOM  |HETATM)"
FORCEFIELD_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*(/[A-Za-z0-9_\-][A-Za-z0-9_.\-]*)*\.xml$"
#: ``boltzgen.systems.SOLVENTS`` and ``CONSTRAINTS`` (a test keeps them equal; importing
#: systems here would load OpenMM into the SDK)
SOLVENT_NAMES = ("vacuum", "obc2", "obc1", "gbn", "gbn2", "hct")
CONSTRAINT_NAMES = ("none", "hbonds", "allbonds", "hangles")
ForceFieldFile = Annotated[
    str, Field(min_length=5, max_length=200, json_schema_extra={"pattern": FORCEFIELD_PATTERN})
]


class SystemCreate(BaseModel):
    """A system from PDB text (JSON body; multipart upload with a ``pdb`` file also works).

    What the schema cannot say -- that OpenMM can parse the PDB and build the force field, a
    server's own limits on atoms and temperature -- is a 422 naming the problem."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    pdb: str = Field(
        min_length=1,
        pattern=PDB_RECORD,
        description="PDB file contents: at least one ATOM or HETATM record",
    )
    name: str | None = Field(None, max_length=200)
    forcefield: list[ForceFieldFile] = Field(
        default_factory=lambda: list(DEFAULT_FORCEFIELD),
        min_length=1,
        max_length=16,
        description="OpenMM force-field XML files, e.g. amber99sbildn.xml",
    )
    solvent: str = Field("vacuum", max_length=32, json_schema_extra={"enum": list(SOLVENT_NAMES)})
    temperature: float = Field(
        300.0, gt=0.0, le=10_000.0, description="K (finite; a server may allow less)"
    )
    constraints: (
        Annotated[str, Field(json_schema_extra={"enum": list(CONSTRAINT_NAMES)})] | None
    ) = Field(None, description="None, 'hbonds', 'allbonds', 'hangles'")


class SystemInfo(_Model):
    id: str
    name: str
    n_atoms: int
    solvent: str
    temperature: float
    forcefield: list[str]
    created_at: datetime


class JobCreate(BaseModel):
    """Submit a job of a registered kind (see ``GET /v1/kinds`` for parameter schemas).

    The server's OpenAPI document shows this as a union discriminated by ``kind``, one variant
    per registered kind with that kind's parameter schema; ``params`` is validated against it
    at submit (422 naming the field)."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    system_id: str | None = None
    model_id: str | None = None
    max_attempts: int | None = Field(None, ge=1, le=20)


class JobError(_Model):
    type: str
    message: str


class JobInfo(_Model):
    id: str
    kind: str
    status: JobStatus
    progress: float = Field(description="fraction done, 0..1")
    message: str = ""
    attempts: int
    max_attempts: int
    cancel_requested: bool = False
    system_id: str | None = None
    model_id: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    last_error: dict[str, Any] | None = None
    links: dict[str, str] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES


class ArtifactInfo(_Model):
    id: str
    job_id: str
    name: str
    size: int
    media_type: str
    created_at: datetime
    links: dict[str, str] = Field(default_factory=dict)


class ModelInfo(_Model):
    id: str
    name: str
    system_id: str | None = None
    job_id: str | None = None
    size: int
    summary: dict[str, Any] | None = None
    created_at: datetime
    links: dict[str, str] = Field(default_factory=dict)


class Page(_Model):
    """One page of a list; pass ``next_cursor`` as ``cursor`` for the next page (None: last)."""

    items: list[Any]
    next_cursor: str | None = None


class JobPage(Page):
    items: list[JobInfo]


class SystemPage(Page):
    items: list[SystemInfo]


class ModelPage(Page):
    items: list[ModelInfo]


class ArtifactList(_Model):
    items: list[ArtifactInfo]


class KindInfo(_Model):
    name: str
    description: str
    gpu: bool
    needs_system: bool
    needs_model: bool
    params_schema: dict[str, Any]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200)


class KeyInfo(_Model):
    id: str
    name: str
    created_at: datetime
    revoked: bool = False
    key: str | None = Field(None, description="the plaintext key; only in the creation response")


class Problem(_Model):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
