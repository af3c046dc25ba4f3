"""Service settings, read from ``BOLTZGEN_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "share" / "boltzgen"


class Settings(BaseSettings):
    """Everything the server and the workers need. Every field is ``BOLTZGEN_<NAME>``.

    ``state_dir`` holds the SQLite store, uploaded systems, job directories, artifacts and
    models; with several hosts (Postgres ``database_url``) it must be a shared filesystem.
    (``BOLTZGEN_DATA`` is a different thing: the shipped input data, see ``boltzgen.paths``.)
    """

    model_config = SettingsConfigDict(env_prefix="BOLTZGEN_", extra="ignore")

    state_dir: Path = Field(default_factory=_default_state_dir)
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<state_dir>/boltzgen.db"
    )

    # auth
    auth: bool = True
    admin_key: SecretStr | None = None

    # limits (job parameters are checked against these after validation, i.e. after "4e8" or
    # 4e8 became the integer 400000000, wherever in the parameters the field sits)
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = Field(64, ge=2, description="deepest nesting of a JSON body")
    max_atoms: int = 5000
    max_samples: int = 1_000_000
    max_md_steps: int = 50_000_000
    max_temperature: float = Field(5000.0, gt=0, description="K, of an uploaded system")
    max_active_jobs_per_key: int = 16
    page_size_max: int = 200

    # jobs and workers
    executor: Literal["local", "ray", "none"] = "local"
    workers: int = Field(1, ge=0, description="concurrent job processes in the embedded pool")
    lease_seconds: float = 60.0
    heartbeat_seconds: float | None = Field(None, description="default lease_seconds / 4")
    max_attempts: int = Field(3, ge=1)
    retry_backoff_seconds: float = 2.0
    poll_seconds: float = 0.25
    retry_after_seconds: int = 2
    job_modules: str = Field("", description="comma-separated modules with extra job kinds")
    job_threads: int = 1

    # ray
    ray_address: str | None = None
    ray_gpus_per_job: float = 0.0
    ray_cpus_per_job: float = 1.0

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'boltzgen.db'}"

    @property
    def heartbeat_interval(self) -> float:
        return self.heartbeat_seconds or max(self.lease_seconds / 4.0, 0.05)
