"""The server's state and the FastAPI dependencies every route shares: auth, the component a
route needs, a typed JSON body checked before anything queues, and running work on the queue."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request

from llmdit_cli.serve.checks import parse_body, parse_json, read_limited
from llmdit_cli.serve.config import ServeConfig
from llmdit_cli.serve.errors import result_of
from llmdit_cli.serve.settings import ApiError
from llmdit_cli.serve.work import Job, QueueFull, WorkQueue


@dataclass
class ServerState:
    """One per app (`app.state.llmdit`): its configuration, engine and queue."""

    cfg: ServeConfig
    engine: Any
    started: int
    queue: WorkQueue | None = None
    lora_models: list = field(default_factory=list)  # LoRA model keys, least recently used first


def server(request: Request) -> ServerState:
    return request.app.state.llmdit


def authorized(request: Request, state: ServerState = Depends(server)) -> ServerState:
    """The state, once the bearer token (when the server has one) matches."""
    token = state.cfg.token
    if token is not None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), token.encode()):
            raise ApiError(401, "missing or wrong API token (Authorization: Bearer TOKEN)", kind="authentication_error")
    return state


def holding(component: str, forwarded: bool = False):
    """A dependency refusing a route this server's `--components` does not serve; `forwarded`: a
    DiT server answers it through its encoder server."""

    def check(state: ServerState = Depends(authorized)) -> ServerState:
        cfg = state.cfg
        if cfg.components not in ("all", component) and not (forwarded and cfg.encoder_url):
            raise ApiError(
                404, f"this server holds the {cfg.components} only (--components {cfg.components})", kind="not_found"
            )
        return state

    return check


def json_body(model: type):
    """A dependency giving the body as `model`: JSON only (415; a browser sends text/plain across
    sites without asking, JSON needs a preflight), within --max-body-bytes (413), finite numbers,
    and a 400 naming the first field at fault."""

    async def parse(request: Request, state: ServerState = Depends(authorized)):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, not {kind or 'none'!r}")
        data = await read_limited(request, state.cfg.limits.max_body_bytes)
        return parse_body(model, parse_json(data))

    return parse


def documented(model: type) -> dict[str, Any]:
    """`openapi_extra` for a route whose body `json_body(model)` reads (`app.openapi` adds the schemas)."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def submit(state: ServerState, label: str, work) -> Job:
    try:
        return state.queue.submit(label, work)
    except QueueFull as exc:
        raise ApiError(503, f"server busy: {exc}; retry later", kind="server_busy") from None


async def run_job(request: Request, state: ServerState, label: str, work):
    """Queue `work(job)` and wait for it; a client that goes away cancels it."""
    job = submit(state, label, work)
    waiting = asyncio.wrap_future(job.future)
    waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, so never "unretrieved"
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=0.2)
        if done:
            return result_of(waiting, state.cfg.settings)
        if await request.is_disconnected():
            job.cancel()
            raise ApiError(499, "client closed the request")
