"""Write requirements/constraints.txt from the virtualenv that runs it, so the Docker image
installs exactly the versions the test suite passed with.

    .venv/bin/python scripts/gen_constraints.py   # after adding or upgrading any dependency

It pins every installed distribution (what `pip freeze --all` lists) but the project itself and
pip; setuptools stays, as the image builds the project with it. Local version labels are dropped:
the venv holds torch's CPU build (`2.13.0+cpu`), the image installs the same release from PyPI,
whose default build is CUDA's.
tests/test_deploy_files.py fails when a dependency of pyproject.toml is missing here or pinned
to a version other than the one installed.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "requirements" / "constraints.txt"
LEFT_OUT = {"openreel", "pip"}

HEADER = """\
# Pins for the Docker image (pip install --constraint). Generated from the development venv by
# `.venv/bin/python scripts/gen_constraints.py`; do not edit by hand. The CUDA wheels of PyPI's
# torch build (nvidia-*, cuda-toolkit, cuda-bindings, triton) are absent: torch requires them at
# fixed versions (cuda-bindings within 13.x).
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name not in LEFT_OUT:
            pins[name] = dist.version.split("+", 1)[0]
    return pins


def render() -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in sorted(installed_pins().items()))


if __name__ == "__main__":
    TARGET.write_text(render())
