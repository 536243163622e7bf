"""One API call as use cases see it: who made it and what it says, with no HTTP in it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from piston_vm.core.tokens import Claims


@dataclass(frozen=True, slots=True)
class Call:
    """The input of a use case. A handler builds it from the request; a worker or a command
    builds it from whatever asks (`Call("worker-1")` is a call that says nothing)."""

    request_id: str
    query: Mapping[str, str] = field(default_factory=dict)
    envelope: Mapping[str, Any] = field(default_factory=dict)
    claims: Claims | None = None
    # Why a folder change or delete happens, for the `reason` of `voicemail_deleted` events
    # (docs/events.md): the API's own calls are `crossbar_action`, as the platform names them.
    reason: str = "crossbar_action"

    @property
    def data(self) -> Any:
        return self.envelope.get("data", {})

    def value(self, name: str) -> Any:
        """A request value: `data.X`, else the query string, else the envelope (docs/api.md 3.3)."""
        data = self.data
        if isinstance(data, dict) and data.get(name) is not None:
            return data[name]
        if name in self.query:
            return self.query[name]
        return self.envelope.get(name)
