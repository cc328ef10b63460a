"""The Ed25519 key pair that signs webhooks, and its public half as a JWKS document.

Receivers verify with the public keys served at ``/.well-known/jwks.json``, so the API and
every io-worker must sign with the same key: it lives in Redis (first ``SET NX`` wins, so
processes starting together still agree) or in ``webhook_key_file``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from openreel.settings import Settings

REDIS_KEY = "openreel:webhook-signing-key"


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _from_pem(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the webhook signing key must be an Ed25519 key")
    return key


def _from_file(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(_private_pem(Ed25519PrivateKey.generate()))
        try:
            os.link(temporary, path)  # atomic and never overwrites: the first process to start wins
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return _from_pem(path.read_bytes())


def load_signing_key(settings: Settings, connection: redis.Redis) -> Ed25519PrivateKey:
    """The configured key file (made on first use), else the key shared through Redis."""
    if settings.webhook_key_file is not None:
        return _from_file(settings.webhook_key_file)
    connection.set(REDIS_KEY, _private_pem(Ed25519PrivateKey.generate()), nx=True)
    return _from_pem(connection.get(REDIS_KEY))  # type: ignore[arg-type]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwks(key: Ed25519PrivateKey) -> dict[str, Any]:
    """fal's JWKS shape; ``kid`` is the RFC 7638 thumbprint, so it only changes with the key."""
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(public)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return {"keys": [{**members, "kid": _b64url(hashlib.sha256(canonical).digest())}]}


def signature_headers(
    key: Ed25519PrivateKey, request_id: str, user_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """fal's four webhook headers; the signature covers ids, time and the body's SHA-256."""
    message = f"{request_id}\n{user_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": user_id,
        "X-Fal-Webhook-Timestamp": str(timestamp),
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }
