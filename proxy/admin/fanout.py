"""The admin port of a supervisor of workers (`workers: N`): `GET /workers`, `/livez`, `/readyz`
and `/metrics` served here, anything else asked of every worker and their responses merged
into one (proxy/admin/merge.py). It reaches the supervisor only through a SupervisorView."""

from __future__ import annotations

import asyncio
import os

import orjson
from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.adapters.aiohttp_internals import drop_server_marker
from proxy.admin.app import LIVE_PATH, json_errors, livez, state, token_guard
from proxy.admin.merge import MissingResponse, WorkerResponse, merge_responses
from proxy.admin.view import SupervisorView
from proxy.http.errors import json_error
from proxy.http.headers import HOP_BY_HOP
from proxy.observe.metrics import render_multiprocess

# Not passed on to the workers: per hop, or set again by the client.
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "expect", "accept-encoding"}


def build_fanout_admin(view: SupervisorView) -> web.Application:
    """The admin port with several workers: `/workers` here, everything else merged from them."""
    guard = token_guard(view.token)

    async def workers(_: web.Request) -> web.Response:
        document = {"supervisor": os.getpid(), "workers": view.workers()}
        return web.Response(body=orjson.dumps(document), content_type="application/json")

    async def forward(request: web.Request) -> web.Response:
        # The workers check the admin token themselves: which paths need it is theirs to say.
        if not request.raw_path.startswith("/"):  # an absolute-form or `*` target
            return json_error(400, "bad_request", "the admin listener wants an origin-form target")
        body = await request.read()  # bounded by client_max_size
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP
        )
        results = await view.ask_all(request.method, request.raw_path, headers, body)
        responses = [r for r in results if isinstance(r, WorkerResponse)]
        missing = [r for r in results if isinstance(r, MissingResponse)]
        merged = merge_responses(request.method, responses, missing)
        out = CIMultiDict(merged.headers)
        if merged.content_type:
            out["Content-Type"] = merged.content_type
        return web.Response(status=merged.status, body=merged.body, headers=out)

    async def reload(request: web.Request) -> web.Response:
        view.reload()
        return await forward(request)  # each worker re-reads the file and responds for itself

    async def revoke(request: web.Request) -> web.Response:
        await view.note_revocation(await request.read())
        return await forward(request)  # each worker revokes it and responds for itself

    async def metrics(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(render_multiprocess, view.metrics_dir())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def readyz(_: web.Request) -> web.Response:
        word = view.readiness()
        return state(word == "ready", word)

    app = web.Application(middlewares=[json_errors])
    app.on_response_prepare.append(drop_server_marker)  # listen.server_header: false
    app.router.add_get(LIVE_PATH, livez)  # the supervisor's own loop
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/workers", guard(workers))
    app.router.add_get("/metrics", guard(metrics))
    app.router.add_post("/config/reload", guard(reload))
    app.router.add_post("/tokens/revoke", guard(revoke))
    app.router.add_route("*", "/{tail:.*}", forward)
    return app
