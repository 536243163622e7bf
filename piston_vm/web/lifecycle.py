"""An app's life around a shutdown (docs/operations.md, "Shutdown"): draining, refusing, and the
requests still in flight.

aiohttp's own graceful shutdown cannot finish an upload: once it starts closing connections it
drops every byte that arrives on them, so a request body still on its way would stall until the
timeout. `piston-vm serve` therefore waits here for the requests in flight with the listener
closed and the connections untouched, and only then hands over to aiohttp's cleanup.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from piston_vm.core import errors


class Lifecycle:
    def __init__(self) -> None:
        # Draining: /readyz answers 503 while requests are still served.
        self.draining = False
        # Refusing: the grace period is over; a new request on a kept-alive connection gets 503.
        self.refusing = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def begin_draining(self) -> None:
        self.draining = True

    def refuse_new_requests(self) -> None:
        self.draining = self.refusing = True

    async def wait_idle(self, timeout_s: float) -> bool:
        """True once no request is in flight; False when `timeout_s` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def middleware(self) -> Middleware:
        @web.middleware
        async def in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
            if self.refusing:
                raise errors.shutting_down()
            self.in_flight += 1
            self._idle.clear()
            try:
                return await handler(request)
            finally:
                self.in_flight -= 1
                if not self.in_flight:
                    self._idle.set()

        return in_flight
