"""The Docker image and docker compose files, checked without a Docker engine: parsed, and held
against the project (settings, routes, dependency pins) so they cannot silently drift from it."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from openreel import healthcheck
from openreel.settings import Settings
from pipelines.registry import check_context_parallel

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# Services running the openreel image, built from the Dockerfile.
OPENREEL_SERVICES = {name for name, service in SERVICES.items() if service.get("build") == "."}
SETTING_NAMES = {f"OPENREEL_{name.upper()}" for name in Settings.model_fields}
# A minimal .env: the variables compose requires.
DOTENV = {"OPENREEL_API_KEYS": "key-a,key-b", "OPENREEL_S3_SECRET_ACCESS_KEY": "minio-secret"}
# The CUDA version of PyPI's default build of each torch release the image may pin.
TORCH_CUDA = {"2.13.0": "13.0"}


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ENV_EXAMPLE = script("gen_env_example")
COMPOSE_USES = ENV_EXAMPLE.compose_variables((ROOT / "docker-compose.yml").read_text())
IMAGE_ENV = ENV_EXAMPLE.image_environment(DOCKERFILE)


def instructions(keyword: str) -> list[str]:
    """The arguments of every Dockerfile instruction ``keyword``, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.split(None, 1)[:1] == [keyword]]


def interpolated(value: str, overrides: dict[str, str]) -> str:
    """``value`` as compose would see it, with ``overrides`` as the .env."""

    def substitute(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if name in overrides:
            return overrides[name]
        assert not (operator or "").endswith("?"), f"{name} is required but not given"
        return argument if operator and operator.endswith("-") else ""

    return ENV_EXAMPLE.INTERPOLATION.sub(substitute, value)


def container_env(service: str, dotenv: dict[str, str] = DOTENV) -> dict[str, str]:
    """The OPENREEL_* variables a service's container starts with: the image's ENV, then compose's."""
    env = {name: value for name, value in IMAGE_ENV.items() if name.startswith("OPENREEL_")}
    env.update({name: interpolated(str(value), dotenv) for name, value in SERVICES[service]["environment"].items()})
    return env


def test_compose_runs_every_part_of_openreel() -> None:
    assert {"redis", "minio", "minio-init", "api", "io-worker", "worker", "worker-cpu"} <= set(SERVICES)
    commands = {name: SERVICES[name]["command"] for name in OPENREEL_SERVICES}
    assert commands == {
        "api": ["openreel", "api"],
        "io-worker": ["openreel", "io-worker"],
        "worker": ["openreel", "worker"],
        "worker-cpu": ["openreel", "worker"],
        "worker-group": [
            "torchrun", "--standalone", "--nproc-per-node=2", "--max-restarts=3", "--no-python", "openreel", "worker"
        ],
    }


def test_redis_keeps_every_write_and_never_evicts() -> None:
    redis = SERVICES["redis"]
    assert redis["image"].startswith("redis:")
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory-policy noeviction" in command
    assert "redis:/data" in redis["volumes"]  # where the official image keeps its AOF


def test_gpu_worker_reserves_one_gpu_and_the_cpu_profile_needs_none() -> None:
    worker, cpu_worker = SERVICES["worker"], SERVICES["worker-cpu"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert len(device["device_ids"]) == 1  # one worker per GPU
    assert worker["profiles"] == ["gpu"] and cpu_worker["profiles"] == ["cpu"]
    assert "deploy" not in cpu_worker
    assert container_env("worker")["OPENREEL_MODELS"] == "full"
    assert container_env("worker-cpu", DOTENV | {"OPENREEL_MODELS": "full"})["OPENREEL_MODELS"] == "tiny"
    assert container_env("worker-cpu")["OPENREEL_DEVICE"] == "cpu"
    profiled = {name for name, service in SERVICES.items() if "profiles" in service}
    assert profiled == {"worker", "worker-cpu", "worker-group"}  # everything else runs in every profile


def test_the_worker_group_holds_as_many_gpus_as_ranks_and_serves_what_it_can_split() -> None:
    group = SERVICES["worker-group"]
    (device,) = group["deploy"]["resources"]["reservations"]["devices"]
    ranks = int(next(arg for arg in group["command"] if arg.startswith("--nproc-per-node=")).split("=")[1])
    assert len(set(device["device_ids"])) == ranks >= 2
    assert interpolated(SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"][0],
                        DOTENV) not in device["device_ids"]
    assert group["profiles"] == ["group"] and group["shm_size"]
    endpoints = container_env("worker-group")["OPENREEL_ENDPOINTS"].split(",")
    check_context_parallel(endpoints)  # what a group refuses at start, it must not be given here


def test_weights_and_data_live_on_named_volumes() -> None:
    declared = set(COMPOSE["volumes"])
    for name in OPENREEL_SERVICES:
        mounts = dict(volume.split(":", 1) for volume in SERVICES[name]["volumes"])
        assert mounts["data"] == IMAGE_ENV["OPENREEL_DATA_DIR"], name
        assert set(mounts) <= declared
    for name in ("worker", "worker-cpu", "worker-group"):
        mounts = dict(volume.split(":", 1) for volume in SERVICES[name]["volumes"])
        assert name == "worker-cpu" or mounts["hf-cache"] == IMAGE_ENV["HF_HOME"]
    # No weights in the image: nothing fetches them at build time or copies them in.
    assert not any("fetch-weights" in run or "make-tiny-models" in run for run in instructions("RUN"))
    assert [line.split()[0] for line in instructions("COPY")] == ["requirements/constraints.txt"]


def test_the_bucket_exists_before_openreel_starts() -> None:
    init = SERVICES["minio-init"]
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert init["restart"] == "no"
    script_text = init["command"][0]
    assert 'mc mb --ignore-existing "local/$$OPENREEL_S3_BUCKET"' in script_text
    # The init script and openreel read the bucket, endpoint and credentials from one place.
    api_env = {name: value for name, value in SERVICES["api"]["environment"].items() if name != "OPENREEL_API_KEYS"}
    assert init["environment"] == api_env
    assert "s3:GetObject" in script_text and "s3:ListBucket" not in script_text
    credentials = {"OPENREEL_S3_ACCESS_KEY_ID": "MINIO_ROOT_USER", "OPENREEL_S3_SECRET_ACCESS_KEY": "MINIO_ROOT_PASSWORD"}
    for setting, minio_variable in credentials.items():
        assert SERVICES["minio"]["environment"][minio_variable] == init["environment"][setting]


def test_services_start_in_order_through_health_checks() -> None:
    one_shot = {name for name, service in SERVICES.items() if service.get("restart") == "no"}
    assert one_shot == {"minio-init"}
    for name, service in SERVICES.items():
        if name not in one_shot:
            # The openreel services inherit the image's HEALTHCHECK and only tune its timing.
            assert "test" in service["healthcheck"] or name in OPENREEL_SERVICES, name
        for target, condition in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if target in one_shot else "service_healthy"
            assert condition == {"condition": expected}, (name, target)
    for name in OPENREEL_SERVICES:
        assert set(SERVICES[name]["depends_on"]) == {"redis", "minio-init"}, name


def test_every_variable_compose_reads_is_documented_or_defaulted() -> None:
    documented = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    for name, use in COMPOSE_USES.items():
        assert use.default is not None or name in documented, name
    required = {name for name, use in COMPOSE_USES.items() if use.required}
    assert required == {"OPENREEL_API_KEYS", "OPENREEL_S3_SECRET_ACCESS_KEY"}
    uncommented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert required <= uncommented
    assert SETTING_NAMES <= documented  # .env.example documents every setting


def test_every_openreel_variable_is_a_setting() -> None:
    used = {name for name in COMPOSE_USES if name.startswith("OPENREEL_")}
    for service in OPENREEL_SERVICES | {"minio-init"}:
        used |= set(SERVICES[service]["environment"])
    used |= {name for name in IMAGE_ENV if name.startswith("OPENREEL_")}
    assert used <= SETTING_NAMES, used - SETTING_NAMES


def test_compose_wiring_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OPENREEL_SERVICES:
        for variable in [v for v in os.environ if v.startswith("OPENREEL_")]:
            monkeypatch.delenv(variable)
        for variable, value in container_env(name).items():
            monkeypatch.setenv(variable, value)
        settings = Settings()
        assert settings.storage == "s3" and settings.s3_bucket == "openreel", name
        assert settings.redis_url == "redis://redis:6379/0", name
        assert settings.s3_endpoint_url == "http://minio:9000", name
    # The API binds beyond loopback, so it refuses to start without keys: compose passes them.
    monkeypatch.setenv("OPENREEL_API_KEYS", container_env("api")["OPENREEL_API_KEYS"])
    assert not Settings().binds_loopback_only()
    assert Settings().api_keys == ["key-a", "key-b"]
    published = interpolated(SERVICES["api"]["ports"][0], DOTENV)
    assert published == f"8000:{Settings.model_fields['port'].default}"


def test_env_example_is_fresh() -> None:
    assert (ROOT / ".env.example").read_text() == ENV_EXAMPLE.render(), "run scripts/gen_env_example.py"


def pins() -> dict[str, str]:
    lines = (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def test_every_dependency_is_pinned_to_the_tested_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"] + project["optional-dependencies"]["test"]]
    pinned = pins()
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned: run scripts/gen_constraints.py"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (name, pinned[name])
        installed = metadata.version(requirement.name)
        assert pinned[name] == installed, f"{name} {installed} is installed: run scripts/gen_constraints.py"
    assert "openreel" not in pinned
    assert pinned["torch"] == metadata.version("torch").split("+")[0]


def test_the_image_installs_only_pinned_versions() -> None:
    (copy,) = [line for line in instructions("COPY") if line.startswith("requirements/constraints.txt ")]
    constraints = copy.split()[1]
    installs = [command for run in instructions("RUN") for command in run.split("&&") if "pip install" in command]
    assert installs
    for command in installs:
        words = shlex.split(command)
        assert words[words.index("--constraint") + 1] == constraints, command
    targets = [shlex.split(command)[-1] for command in installs]
    assert targets[0] == "torch"  # first: the largest layer, rebuilt only when the pins change
    assert "/src" in targets and "/tmp/dependencies.txt" in targets
    assert any("pip check" in run for run in instructions("RUN"))


def test_the_base_image_matches_torchs_cuda_build() -> None:
    (argument,) = [line for line in instructions("ARG") if line.startswith("CUDA_IMAGE=")]
    assert instructions("FROM") == ["${CUDA_IMAGE}"]
    match = re.fullmatch(r"CUDA_IMAGE=nvidia/cuda:(\d+\.\d+)\.\d+-runtime-ubuntu[\d.]+", argument)
    assert match is not None, argument
    assert match.group(1) == TORCH_CUDA[pins()["torch"]]


def test_the_image_runs_as_a_user_with_the_api_by_default() -> None:
    (user,) = instructions("USER")
    assert user not in ("root", "0")
    assert DOCKERFILE.index("USER ") < DOCKERFILE.index("CMD ")
    assert instructions("CMD") == ['["openreel", "api"]']
    assert IMAGE_ENV["OPENREEL_HOST"] == "0.0.0.0"


def test_the_healthcheck_runs_the_role_aware_check() -> None:
    (check,) = instructions("HEALTHCHECK")
    assert check.endswith('CMD ["python", "-m", "openreel.healthcheck"]')
    assert healthcheck.LIVE_PATH == "/live"  # answered by the API: tests/test_healthcheck.py


def test_package_data_reaches_the_image() -> None:
    """The image installs the project as a wheel, which holds only declared non-Python files."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = setuptools.get("package-data", {})
    for package in ("openreel", "server", "workers", "pipelines", "models"):
        for path in (ROOT / package).rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc"):
                continue
            relative = path.relative_to(ROOT / package)
            patterns = declared.get(package, [])
            assert any(relative.match(pattern) for pattern in patterns), f"{package}/{relative} is not package data"
