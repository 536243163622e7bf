"""What the pipeline learns about one request, for handlers to read (api.md 2 and 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from piston_vm.storage.accounts import Account
from piston_vm.tokens import Claims

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

    @property
    def data(self) -> Any:
        return self.envelope.get("data", {})

    def value(self, name: str) -> Any:
        """A request value: `data.X`, else the query string, else the envelope (api.md 3.3)."""
        data = self.data
        if isinstance(data, dict) and data.get(name) is not None:
            return data[name]
        if name in self.query:
            return self.query[name]
        return self.envelope.get(name)

    @property
    def authenticated(self) -> bool:
        return self.claims is not None
