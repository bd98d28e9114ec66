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
    history: Any = None  # history.History of the data folder
    stack_jobs: dict = field(default_factory=dict)  # stack id -> its last edit job (one at a time)
    catalog: list | None = None  # /v1/llmdit/settings, described once

    def record(self, task: str, settings: dict[str, Any], files: list[bytes] = (), **fields: Any):
        """Add an entry to the history (the served model, its family), committed before the client hears of it."""
        return self.record_many([(task, settings, list(files), fields)])[0]

    def record_many(self, items: list[tuple[str, dict[str, Any], list[bytes], dict[str, Any]]]) -> list:
        """`record` for several entries (task, settings, files, fields) in one history write."""
        family = self.engine.model(self.cfg.settings.base())[0].family.name
        new = self.history.new_entry
        return self.history.add_many(
            [
                (new(task, self.cfg.model, family, settings, len(files), **fields), files)
                for task, settings, files, fields in items
            ]
        )


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


def serving(key: str, flag: str, what: str):
    """A dependency refusing (404) a DiT-server route whose model setting `key` the server was not
    given (its `flag` or the config file): a request must not make it load, or download, a
    model by the default name."""

    def check(state: ServerState = Depends(holding("dit"))) -> ServerState:
        if state.cfg.settings.base().sources.get(key, "default") == "default":
            raise ApiError(404, f"this server serves no {what} (start it with {flag})", kind="not_found")
        return state

    return check


def json_body(model: type, images: int = 0):
    """A dependency giving the body as `model`: JSON only (415; a browser sends text/plain across
    sites without asking, JSON needs a preflight), within --max-body-bytes plus room for `images`
    data URLs of --max-image-bytes each (413; each image's own bound is checked where it is read,
    naming its field), finite numbers, and a 400 naming the first field at fault."""

    async def parse(request: Request, state: ServerState = Depends(authorized)):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, f"Content-Type must be application/json, not {kind or 'none'!r}")
        limits = state.cfg.limits
        data = await read_limited(
            request, limits.max_body_bytes + images * data_url_chars(limits.max_image_bytes), images
        )
        raw = parse_json(data)
        rest = len(data) - sum(sorted(data_url_lengths(raw), reverse=True)[:images])
        if rest > limits.max_body_bytes:  # the room was for images, not for anything else
            raise ApiError(
                413,
                f"request body of {rest} bytes besides its images is over the limit of "
                f"{limits.max_body_bytes} (--max-body-bytes)",
            )
        return parse_body(model, raw)

    return parse


def data_url_chars(image_bytes: int) -> int:
    """The most characters a data URL of an image of `image_bytes` bytes takes (base64: 4 per 3)."""
    return 4 * -(-image_bytes // 3) + 64


def data_url_lengths(body: Any) -> list[int]:
    """The lengths of the data URLs (strings starting `data:`) anywhere in a parsed JSON body
    (walked without recursion: a body may nest as deep as the JSON parser allows)."""
    found, todo = [], [body]
    while todo:
        value = todo.pop()
        if isinstance(value, str) and value.startswith("data:"):
            found.append(len(value))
        elif isinstance(value, dict):
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return found


def form_body(model: type, files: tuple[str, ...]):
    """A dependency giving a multipart body as (`model` of its text fields, {file field: bytes}):
    within --max-body-bytes plus two images (413), the file fields `files` only, and a 400
    naming the first field at fault. A field sent as `name[]` (OpenAI's clients, for lists) is `name`."""
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def parse(request: Request, state: ServerState = Depends(authorized)):
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise ApiError(415, f"Content-Type must be multipart/form-data, not {kind or 'none'!r}")
        refuse_other_sites(request, state)
        limits = state.cfg.limits
        data = await read_limited(request, limits.max_body_bytes + 2 * limits.max_image_bytes, 2)

        async def stream():
            yield data

        parser = MultiPartParser(request.headers, stream(), max_files=len(files), max_fields=64)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise ApiError(400, f"the multipart body is malformed ({exc.message})") from None
        fields: dict[str, Any] = {}
        uploads: dict[str, bytes] = {}
        for raw_name, value in form.multi_items():
            name = raw_name.removesuffix("[]")
            if name in fields or name in uploads:
                raise ApiError(400, f"{name}: given twice (one {name} per request)", name)
            if isinstance(value, UploadFile):
                if name not in files:
                    raise ApiError(400, f"{name}: not a file field here", name)
                uploads[name] = await value.read()
            elif name in files:
                raise ApiError(400, f"{name}: send it as a file upload, not as a text field", name)
            else:
                fields[name] = value
        return parse_body(model, fields), uploads

    return parse


def refuse_other_sites(request: Request, state: ServerState) -> None:
    """A browser posts a multipart form to any site without asking first (no preflight), so a page
    elsewhere could make a tokenless server on this machine work: without a token, a form whose
    Origin is not this server is refused. (With one, a form cannot send the Authorization header.)
    The studio's own page sends this server's Origin; API clients send none."""
    from urllib.parse import urlsplit

    origin = request.headers.get("origin")
    if origin is None or state.cfg.token is not None:
        return
    try:
        parts = urlsplit(origin)
        theirs = _netloc(parts.netloc, parts.scheme)
    except ValueError:
        theirs = ""
    # Behind a proxy that rewrites Host, its X-Forwarded-Host (which a form cannot set) counts.
    forwarded = request.headers.get("x-forwarded-host", "").split(",")[0]
    ours = {_netloc(h, parts.scheme if theirs else "") for h in (request.headers.get("host", ""), forwarded)}
    if not theirs or theirs not in ours:
        raise ApiError(403, f"Origin {origin[:100]}: forms from other sites are refused", kind="permission_error")


def _netloc(netloc: str, scheme: str) -> str:
    """`host[:port]` in lower case, without the scheme's default port (browsers leave it out)."""
    netloc = netloc.strip().lower()
    default = {"http": ":80", "https": ":443"}.get(scheme)
    return netloc.removesuffix(default) if default else netloc


def documented(model: type, files: tuple[str, ...] = ()) -> dict[str, Any]:
    """`openapi_extra` for a route whose body `json_body(model)` reads (`app.openapi` adds the
    schemas), or with `files`, the multipart body `form_body(model, files)` reads."""
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    if not files:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}
    schema = model.model_json_schema()
    if "llmdit" in schema["properties"]:  # a form field holds text: the settings arrive as JSON text
        schema["properties"]["llmdit"] = {"type": "string", "description": "a JSON object of settings, as text"}
    schema["properties"].update({name: {"type": "string", "format": "binary"} for name in files})
    schema["required"] = [files[0], *schema.get("required", [])]
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def submit(state: ServerState, label: str, work, task: str = "work") -> Job:
    try:
        return state.queue.submit(label, work, task)
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
