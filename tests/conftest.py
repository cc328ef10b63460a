"""Shared fixtures: offline Hugging Face, one tiny-model cache, a TLS certificate, a running stack."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: tests must never reach a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import redis  # noqa: E402

from openreel.redis_server import EmbeddedRedis  # noqa: E402
from tests.stack import Certificate, Stack, make_certificate  # noqa: E402

API_KEY = "test-key-id:test-key-secret"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny weights are generated once per session, by the first worker that needs them."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def redis_connection(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    """A Redis of its own, for code under test outside a stack (storage keeps its bookkeeping there)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    connection = redis.Redis.from_url(server.start())
    yield connection
    server.stop()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path, certificate: Certificate) -> Iterator[Stack]:
    """The all-in-one stack over HTTPS with an API key and two workers, shared by client tests."""
    running = Stack(
        tmp_path_factory.mktemp("stack"),
        models_dir,
        workers=2,
        tls=certificate,
        env={"OPENREEL_API_KEYS": API_KEY},
    ).start()
    yield running
    running.stop()


@pytest.fixture
def make_stack(tmp_path: Path, models_dir: Path) -> Iterator[callable]:
    """Private plain-HTTP stacks for tests that kill or starve workers."""
    stacks: list[Stack] = []

    def factory(**kwargs: object) -> Stack:
        stack = Stack(tmp_path / f"stack{len(stacks)}", models_dir, **kwargs)  # type: ignore[arg-type]
        stacks.append(stack)
        return stack

    yield factory
    for stack in stacks:
        stack.stop()
