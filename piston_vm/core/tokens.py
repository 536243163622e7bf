"""HS256 JSON Web Tokens (PyJWT): the platform's auth tokens (docs/api.md 6.2, docs/decisions.md
P-24)."""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.warnings import InsecureKeyLengthWarning

ALGORITHM = "HS256"
# RFC 7518 3.2: an HS256 key should have at least as many bytes as the hash.
MIN_SECRET_BYTES = 32


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
    with _short_keys_allowed():
        return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify(token: str, secrets: tuple[str, ...]) -> Claims:
    """Check the signature against any of `secrets`, then the expiry."""
    claims = _signed_claims(token, secrets)
    # PyJWT's rule: expired from the second `exp` names on.
    if claims.expires_at <= time.time():
        raise TokenExpired(claims.account_id)
    return claims


# A signature check costs more than the rest of a cached read (profiled: 14% of a box fetch).
# Its outcome for the same token and secrets never changes, so signed claims are remembered;
# the expiry, which does change, is checked on every use. Failures are not cached.
VERIFIED_TOKENS_CACHED = 4096


@functools.lru_cache(maxsize=VERIFIED_TOKENS_CACHED)
def _signed_claims(token: str, secrets: tuple[str, ...]) -> Claims:
    payload: dict[str, Any] | None = None
    for secret in secrets:
        try:
            with _short_keys_allowed():
                # `iat` is not checked: an instance whose clock runs ahead issues tokens the
                # others must take (the tokens of the hand-written code before were not either).
                payload = jwt.decode(token, secret, algorithms=[ALGORITHM],
                                     options={"require": ["exp"], "verify_iat": False,
                                              "verify_exp": False})
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidTokenError as exc:
            raise TokenInvalid(str(exc)) from None
    if payload is None:
        raise TokenInvalid("bad signature")
    account_id = payload.get("account_id")
    expires_at = payload.get("exp")
    if not isinstance(account_id, str) or not isinstance(expires_at, int):
        raise TokenInvalid("missing claims")
    owner_id = payload.get("owner_id")
    issued_at = payload.get("iat", 0)
    return Claims(
        account_id=account_id,
        owner_id=owner_id if isinstance(owner_id, str) else None,
        method=str(payload.get("method", "")),
        issued_at=int(issued_at) if isinstance(issued_at, int | float) else 0,
        expires_at=expires_at,
    )


@contextmanager
def _short_keys_allowed() -> Iterator[None]:
    # Secrets are the operator's (and a co-existing platform's, docs/decisions.md P-24); a short
    # one is reported once at startup (cli/serve.py), not on every token.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyLengthWarning)
        yield
