"""One single-worker stack shared by the reliability tests that only need a worker to race with
(cancellation, webhooks): each stack start costs seconds of the suite's two cores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.faults import FAULT_STACK_ENV, WEBHOOK_TIMEOUT_S
from tests.stack import Stack


@pytest.fixture(scope="session")
def one_worker_stack(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Stack]:
    """Webhook receivers run on 127.0.0.1, which only fetch_allow opens; tries time out in a second."""
    env = FAULT_STACK_ENV | {"OPENREEL_FETCH_ALLOW": "127.0.0.1", "OPENREEL_WEBHOOK_TIMEOUT_S": str(WEBHOOK_TIMEOUT_S)}
    stack = Stack(tmp_path_factory.mktemp("one-worker-faults"), models_dir, workers=1, env=env).start()
    yield stack
    stack.stop()
