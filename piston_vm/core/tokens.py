"""HS256 JSON Web Tokens: the platform's auth tokens (docs/api.md 6.2, docs/decisions.md
P-24)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

_HEADER = {"alg": "HS256", "typ": "JWT"}


class TokenInvalid(Exception):
    """Malformed or badly signed: the platform's `invalid_credentials` 401."""


class TokenExpired(Exception):
    """Well formed and signed by us, but past `exp`: the platform's other 401."""


@dataclass(frozen=True, slots=True)
class Claims:
    account_id: str
    owner_id: str | None
    method: str
    issued_at: int
    expires_at: int


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(signing_input: bytes, secret: str) -> str:
    return _b64encode(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())


def issue(
    secret: str, account_id: str, method: str, expiry_s: int, owner_id: str | None = None
) -> str:
    issued_at = int(time.time())
    claims: dict[str, Any] = {
        "account_id": account_id,
        "method": method,
        "iat": issued_at,
        "exp": issued_at + expiry_s,
    }
    if owner_id is not None:
        claims["owner_id"] = owner_id
    header = _b64encode(json.dumps(_HEADER, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode()
    return f"{header}.{payload}.{_sign(signing_input, secret)}"


def verify(token: str, secrets: tuple[str, ...]) -> Claims:
    """Check the signature against any of `secrets`, then the expiry."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenInvalid("not three segments")
    header_b64, payload_b64, signature = parts
    signing_input = f"{header_b64}.{payload_b64}".encode()
    if not any(hmac.compare_digest(_sign(signing_input, s), signature) for s in secrets):
        raise TokenInvalid("bad signature")
    try:
        header = json.loads(_b64decode(header_b64))
        payload = json.loads(_b64decode(payload_b64))
    except ValueError as exc:
        raise TokenInvalid("undecodable") from exc
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise TokenInvalid("unexpected algorithm")
    if not isinstance(payload, dict):
        raise TokenInvalid("claims are not an object")
    account_id = payload.get("account_id")
    expires_at = payload.get("exp")
    if not isinstance(account_id, str) or not isinstance(expires_at, int):
        raise TokenInvalid("missing claims")
    if expires_at <= time.time():
        raise TokenExpired(account_id)
    owner_id = payload.get("owner_id")
    return Claims(
        account_id=account_id,
        owner_id=owner_id if isinstance(owner_id, str) else None,
        method=str(payload.get("method", "")),
        issued_at=int(payload.get("iat", 0)),
        expires_at=expires_at,
    )
