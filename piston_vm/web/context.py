"""What the pipeline learns about one request, for handlers to read (docs/api.md 2 and 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from piston_vm.core.call import Call
from piston_vm.core.tokens import Claims
from piston_vm.storage.accounts import Account

JsonObject = dict[str, Any]


@dataclass(slots=True)
class RequestContext:
    request_id: str
    method: str
    query: dict[str, str]
    envelope: JsonObject = field(default_factory=dict)
    pretty: bool = False
    token: str | None = None
    claims: Claims | None = None
    account: Account | None = None
    auth_account: Account | None = None
    # The client's address: X-Forwarded-For's when the peer is a trusted proxy (web/forwarded.py).
    remote: str | None = None
    # Body bytes a streamed answer (web/audio.py) wrote: the access log's bytes_out for it.
    bytes_streamed: int = 0

    def call(self) -> Call:
        """What use cases get of this request (read once its body is parsed)."""
        return Call(self.request_id, self.query, self.envelope, self.claims)

    @property
    def data(self) -> Any:
        return self.envelope.get("data", {})

    def value(self, name: str) -> Any:
        return self.call().value(name)

    @property
    def authenticated(self) -> bool:
        return self.claims is not None
