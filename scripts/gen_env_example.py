"""Write .env.example, the documented .env of docker compose, so it cannot drift from the code.

    python scripts/gen_env_example.py          # rewrite .env.example
    python scripts/gen_env_example.py --check  # exit 1 if it is stale (run by the tests)

Every OPENREEL_* setting comes from the Settings model with its description; the value shown is
the one in effect while the variable is unset: docker-compose.yml's default where compose wires
it, else the image's (Dockerfile ENV), else openreel's own. Variables that compose requires
(`${NAME:?...}`) are the uncommented lines to fill in. Compose's own variables are described
below; the script fails on one that docker-compose.yml uses and this file does not describe.
"""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from pydantic.fields import FieldInfo

from openreel.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / ".env.example"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

# Variables of the compose setup itself, not openreel settings: name -> what it does.
COMPOSE_VARIABLES = {
    "COMPOSE_PROFILES": "Which worker runs: 'gpu' (service worker: the full preset on one GPU) or 'cpu' (service "
    "worker-cpu: the tiny preset, random weights, no GPU). Read by docker compose itself.",
    "IMAGE": "Name of the image 'docker compose build' makes; push it to a registry to run workers on other hosts.",
    "API_PORT": "Host port the API is published on.",
    "MINIO_PORT": "Host port MinIO (S3) is published on. Clients download outputs from it, so it belongs in "
    "OPENREEL_S3_PUBLIC_BASE_URL.",
    "WORKER_GPU": "GPU the worker service reserves: an index or a UUID from 'nvidia-smi -L'.",
    "REDIS_MAXMEMORY": "Redis memory limit. Redis never evicts (noeviction): past it, new requests fail instead "
    "of queued ones vanishing.",
    "HF_TOKEN": "Hugging Face token, for 'openreel fetch-weights' (the CogVideoX repos are public; a token "
    "raises rate limits).",
}
# Compose variables with a value in the example even though compose does not require them.
PRESET = {"COMPOSE_PROFILES": "gpu"}

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $${...} is a literal.
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


@dataclass(frozen=True)
class ComposeUse:
    required: bool
    default: str | None
    error: str = ""  # what compose says when a required variable is missing


def compose_variables(text: str) -> dict[str, ComposeUse]:
    uses: dict[str, ComposeUse] = {}
    for name, operator, argument in INTERPOLATION.findall(text):
        required = "?" in operator
        use = ComposeUse(required, default=argument if "-" in operator else None, error=argument if required else "")
        if uses.setdefault(name, use) != use:
            raise SystemExit(f"docker-compose.yml interpolates {name} in two different ways")
    return uses


def image_environment(text: str) -> dict[str, str]:
    """The ENV instructions of a Dockerfile, continuation lines joined."""
    environment: dict[str, str] = {}
    for instruction in re.sub(r"\\\n", " ", text).splitlines():
        words = instruction.split(None, 1)
        if len(words) == 2 and words[0].upper() == "ENV":
            for pair in shlex.split(words[1]):
                name, _, value = pair.partition("=")
                environment[name] = value
    return environment


def settings_default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(value)
    return str(value)


def comment(text: str) -> list[str]:
    return textwrap.wrap(text, width=100, initial_indent="# ", subsequent_indent="# ", break_on_hyphens=False)


def entry(name: str, description: str, value: str, use: ComposeUse, note: str | None = None) -> list[str]:
    lines = comment(description)
    if note:
        lines += comment(note)
    if use.required:
        lines += comment(f"Required; without it docker compose stops: {use.error}")
    lines.append(f"{name}={value}" if use.required or name in PRESET else f"# {name}={value}")
    return lines + [""]


def render() -> str:
    uses = compose_variables(COMPOSE_FILE.read_text())
    image = image_environment(DOCKERFILE.read_text())
    fields = {f"OPENREEL_{name.upper()}": field for name, field in Settings.model_fields.items()}
    unknown = sorted(name for name in uses if name not in fields and name not in COMPOSE_VARIABLES)
    if unknown:
        raise SystemExit(f"docker-compose.yml uses {', '.join(unknown)}: add them to Settings or COMPOSE_VARIABLES")

    lines = [
        "# The .env of openreel's docker compose: copy this file to .env and fill in the uncommented",
        "# lines. A commented line shows the value in effect while the variable is unset.",
        "# Generated by `.venv/bin/python scripts/gen_env_example.py` from openreel/settings.py,",
        "# docker-compose.yml and the Dockerfile; do not edit by hand.",
        "",
        "# ---- docker compose " + "-" * 79,
        "",
    ]
    for name, description in COMPOSE_VARIABLES.items():
        use = uses.get(name, ComposeUse(required=False, default=None))
        lines += entry(name, description, PRESET.get(name, use.default or ""), use)

    lines += ["# ---- openreel: every setting (docs/settings.md) " + "-" * 51, ""]
    for name, field in fields.items():
        use = uses.get(name, ComposeUse(required=False, default=None))
        if use.default is not None:
            value, note = use.default, "docker-compose.yml's default is the value below."
        elif name in image:
            value, note = image[name], "The image's default is the value below."
        else:
            value, note = ("", None) if use.required else (settings_default(field), None)
        lines += entry(name, field.description or "", value, use, note)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if TARGET.read_text() == render() else 1)
    TARGET.write_text(render())
