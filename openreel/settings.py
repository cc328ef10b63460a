"""The one configuration object, read from ``OPENREEL_*`` environment variables.

Every process (API, GPU worker, the all-in-one launcher) builds the same ``Settings``;
command-line flags are only overrides of these fields, so each flag has an env twin.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


CsvList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENREEL_", extra="ignore")

    # --- HTTP face -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the API binds. Default 127.0.0.1.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port of the API. Default 8000.")
    tls_cert: Path | None = Field(
        None, description="PEM certificate; with tls_key the API serves HTTPS (the Python fal client requires it)."
    )
    tls_key: Path | None = Field(None, description="PEM private key matching tls_cert.")
    public_url: str | None = Field(
        None,
        description="Base URL put in file URLs (e.g. https://media.example.com). "
        "Default: the scheme and host each request arrived on.",
    )
    api_keys: CsvList = Field(
        default_factory=list,
        description="Comma-separated keys accepted in 'Authorization: Key <key>', in addition to keys made "
        "with 'openreel keys create'. Default none: then only loopback binding is allowed.",
    )

    # --- queue -----------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="Redis shared by API and workers, e.g. redis://host:6379/0. "
        "Default unset: 'openreel up' starts an embedded redis-server in data_dir.",
    )
    retention_s: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds request records, results and logs are kept. Default 7 days."
    )
    job_timeout_s: int = Field(
        3600, ge=10, description="Hard limit in seconds on one request's run on a worker. Default 3600."
    )
    max_retries: int = Field(
        3, ge=0, le=10, description="Times a request is re-queued when its worker dies mid-job. Default 3."
    )
    poll_interval_s: float = Field(
        0.1, gt=0, le=5, description="Seconds between record reads in status streams and sync runs. Default 0.1."
    )

    # --- workers ---------------------------------------------------------------------------
    workers: int = Field(1, ge=0, le=64, description="Worker processes 'openreel up' starts. Default 1.")
    endpoints: CsvList = Field(
        default_factory=list,
        description="Endpoint ids (or family names) served; comma-separated. Default: every implemented endpoint.",
    )
    heartbeat_s: float = Field(
        5.0, gt=0, description="Seconds between worker heartbeats, also while a job runs. Default 5."
    )
    heartbeat_ttl_s: int = Field(
        30,
        ge=2,
        description="Seconds without heartbeat after which a worker counts as dead and its job is re-queued. "
        "Default 30.",
    )
    maintenance_s: int = Field(
        10, ge=1, description="Seconds between an idle worker's sweeps for jobs of dead workers. Default 10."
    )
    device: str = Field("auto", description="Torch device for pipelines: auto, cpu, cuda, cuda:N. Default auto.")
    warmup: bool = Field(True, description="Run one small generation at worker start. Default true.")

    # --- models and files ------------------------------------------------------------------
    models: Literal["tiny", "full"] = Field(
        "tiny",
        description="Weight preset: 'full' loads the real Hugging Face repos (GPU hosts); 'tiny' generates "
        "random weights of the same layout offline (tests, laptops). Default tiny.",
    )
    data_dir: Path = Field(Path("data"), description="Embedded Redis, local file storage and caches. Default ./data.")
    model_cache_dir: Path | None = Field(
        None, description="Where tiny weights are generated. Default <data_dir>/models."
    )

    @field_validator("api_keys", "endpoints", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be given together")
        if self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError("heartbeat_ttl_s must exceed heartbeat_s, or live workers look dead")
        return self

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def files_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def binds_loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def as_env(self) -> dict[str, str]:
        """The settings as OPENREEL_* variables, to hand to child processes."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if isinstance(value, list):
                value = ",".join(value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            env[f"OPENREEL_{name.upper()}"] = str(value)
        return env


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit (flag) overrides that are not None."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


def child_env(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OPENREEL_")}
    env.update(settings.as_env())
    return env
