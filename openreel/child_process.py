"""Children of 'openreel up' (Redis, workers) must not outlive it, even when it is killed -9."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for Popen: Linux delivers SIGTERM to the child when its parent dies."""
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a leftover child then needs stopping by hand
