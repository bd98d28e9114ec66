"""`llmdit serve`: one engine behind an HTTP API (OpenAI-compatible where a protocol exists).

    GET  /health                   liveness, the model, the queue                 routes/info.py
    GET  /v1/models                the one model served                           routes/info.py
    POST /v1/chat/completions      the chat model (text encoder or rewriter/); SSE routes/chat.py
    POST /v1/llmdit/encode         prompts -> the embeds stage file (bytes)       routes/encode.py
    POST /v1/images/generations    prompt -> PNGs (b64_json) with their settings  routes/images.py
    POST /v1/images/edits          image + prompt -> PNGs (img2img; multipart)    routes/images.py
    POST /v1/llmdit/generate       images as a job (202); img2img from an upload  routes/studio.py
    GET  /v1/llmdit/jobs/{id}      a job's state and progress; DELETE cancels     routes/studio.py
    POST /v1/llmdit/rewrite        prompts -> rewritten prompts                   routes/studio.py
    GET  /v1/llmdit/settings       every request-time setting, with defaults      routes/studio.py
    GET  /v1/llmdit/history        what the server made (SQLite); /{id}, DELETE   routes/history.py
    GET  /v1/llmdit/files/{name}   a history entry's file                         routes/history.py
    POST /v1/llmdit/decompose      an image -> a stack of layers (a job)          routes/layers.py
    *    /v1/llmdit/stacks/{id}    a stack: edit, restack, revert, export, delete routes/layers.py
    GET  /v1/llmdit/status         the queue and the running job's progress       routes/info.py
    GET  /v1/llmdit/templates      the prompt templates (the web page's list)     routes/info.py
    GET  /openapi.json             the API's schema, request bodies included
    GET  /                         the studio page (files in serve/web, no build step)

Routes share their dependencies (`deps.py`: auth, the component a route needs, typed JSON and
multipart bodies, the queue). Model work goes through one queue (`work.WorkQueue`); a request that
cannot wait gets 503. Every refused request gets `{"error": {"message", "type", "param", "code"}}`
naming the field at fault (`errors.py`). What the server makes is recorded in the data folder's
history (`llmdit_cli/history.py`) before the client hears of it.
"""

from __future__ import annotations

import logging
import time

from llmdit_cli.serve import replies, schemas
from llmdit_cli.serve.config import WEB, ServeConfig, ServerLimits
from llmdit_cli.serve.errors import describe, error_body, status_for

log = logging.getLogger("llmdit.serve")
BODIES = (
    schemas.ChatBody,
    schemas.EncodeBody,
    schemas.ImagesBody,
    schemas.StudioImagesBody,
    schemas.RewriteBody,
    schemas.EditLayerBody,
    schemas.RestackBody,
    schemas.RevertBody,
)

__all__ = ["ServeConfig", "ServerLimits", "create_app", "describe", "error_body", "status_for"]


def create_app(cfg: ServeConfig, engine=None):
    """The FastAPI app for `cfg`; the engine is made (and the components loaded) on startup."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles

    from llmdit_cli.engine import Engine
    from llmdit_cli.history import History, default_data_dir
    from llmdit_cli.serve.deps import ServerState
    from llmdit_cli.serve.errors import install_handlers
    from llmdit_cli.serve.routes import chat, encode, history, images, info, layers, studio
    from llmdit_cli.serve.work import WorkQueue

    state = ServerState(cfg, engine or Engine(), int(time.time()))
    state.history = History(cfg.data_dir or default_data_dir())
    cfg.settings.uploads = state.history.uploads
    cfg.settings.max_image_bytes = cfg.limits.max_image_bytes

    @asynccontextmanager
    async def lifespan(app):
        state.queue = WorkQueue(cfg.limits.max_queue, log.info, cfg.limits.max_batch)
        yield
        state.queue.close()

    # No Swagger page: it loads from a CDN; /openapi.json and docs/serve.md describe the API.
    app = FastAPI(title="llmdit", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.llmdit = state
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    if cfg.trusted_hosts:
        # Without a token on a loopback address: refuse other Host names (DNS rebinding).
        app.add_middleware(HostsOnly, hosts=cfg.trusted_hosts)
    install_handlers(app, cfg.settings)
    for module in (info, encode, images, chat, studio, history, layers):
        app.include_router(module.router)
    app.openapi = lambda: openapi(app)
    return app


class HostsOnly:
    """Refuses (400, the API's JSON error) an HTTP request whose Host header names none of `hosts`."""

    def __init__(self, app, hosts: list[str]) -> None:
        self.app, self.hosts = app, {h.lower() for h in hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            from starlette.datastructures import Headers
            from starlette.responses import JSONResponse

            raw = Headers(scope=scope).get("host", "")
            if host_name(raw) not in self.hosts:
                message = f"Host {raw[:100]!r}: this server answers {', '.join(sorted(self.hosts))} only"
                response = JSONResponse(error_body(message, "invalid_request_error", "Host"), status_code=400)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def host_name(header: str) -> str:
    """The host of a Host header, without its port: `[::1]:8000` -> `[::1]`, `localhost:80` -> `localhost`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def openapi(app) -> dict:
    """FastAPI's schema, with the request bodies the routes read through `deps.json_body`."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        found = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (*BODIES, replies.ErrorReply):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            found.update(body.pop("$defs", {}))
            found[model.__name__] = body
        _real_errors(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _real_errors(schema: dict) -> None:
    """The errors as the server gives them: no FastAPI 422 (every body and parameter is checked
    by llmdit's own code, which answers 400), and the error body on every 4xx and 5xx."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorReply"}}}}
    for operations in schema["paths"].values():
        for operation in operations.values():
            answers = operation.setdefault("responses", {})
            answers.pop("422", None)
            answers["4XX"] = {"description": "Refused: the message says why, `param` names the field", **error}
            answers["5XX"] = {"description": "The server failed, or is busy (503)", **error}
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)


def _version() -> str:
    from llmdit_cli import __version__

    return __version__
