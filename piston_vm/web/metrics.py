"""`GET /metrics`: the Prometheus text exposition of this app's registry (docs/operations.md,
"Metrics"). No token: it is for the scraper, so keep the path off the public listener (or serve
it on PISTON_VM_METRICS_PORT)."""

from __future__ import annotations

from aiohttp import hdrs, web

from piston_vm.core.metrics import Metrics
from piston_vm.web.keys import METRICS

METRICS_PATH = "/metrics"


def metrics_response(request: web.Request, metrics: Metrics) -> web.Response:
    body, content_type = metrics.exposition(request.headers.get(hdrs.ACCEPT, ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


async def metrics_page(request: web.Request) -> web.StreamResponse:
    return metrics_response(request, request.app[METRICS])


def metrics_only_app(metrics: Metrics) -> web.Application:
    """The app of PISTON_VM_METRICS_PORT: /metrics and nothing else."""

    async def page(request: web.Request) -> web.StreamResponse:
        return metrics_response(request, metrics)

    app = web.Application()
    app.router.add_get(METRICS_PATH, page)
    return app
