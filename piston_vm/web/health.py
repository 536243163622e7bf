"""Probes (docs/operations.md, "Probes"): `/healthz` says the process answers, `/readyz` whether
it should get traffic: CouchDB reachable with our credentials, design documents installed, and
not draining for a shutdown."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web

from piston_vm.web import envelope
from piston_vm.web.keys import LIFECYCLE, STORES

HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"


async def healthz(request: web.Request) -> web.StreamResponse:
    """Liveness: 200 whenever the process can answer at all. It never asks CouchDB, so an
    outage there does not get every instance restarted (readiness takes them out instead)."""
    return envelope.json_response({"status": "ok"}, HTTPStatus.OK)


async def readyz(request: web.Request) -> web.StreamResponse:
    draining = request.app[LIFECYCLE].draining
    couch = await request.app[STORES].accounts.readiness()
    # "unknown" design documents are not a failure of their own: CouchDB did not answer.
    failed = [name for name, bad in (("couchdb", couch.couchdb != "up"),
                                     ("design_documents", couch.design_documents == "missing"),
                                     ("draining", draining)) if bad]
    body = {
        "status": "error" if failed else "ok",
        "failed": failed,
        "checks": {"couchdb": couch.couchdb, "design_documents": couch.design_documents,
                   "draining": draining},
    }
    status = HTTPStatus.SERVICE_UNAVAILABLE if failed else HTTPStatus.OK
    return envelope.json_response(body, status)


def begin_draining(app: web.Application) -> None:
    """From now on /readyz answers 503, so load balancers stop sending new requests."""
    app[LIFECYCLE].begin_draining()
