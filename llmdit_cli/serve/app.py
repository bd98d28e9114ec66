"""`llmdit serve`: one engine behind an HTTP API (OpenAI-compatible where a protocol exists).

    GET  /health                   liveness, the model, the queue
    GET  /v1/models                the one model served
    POST /v1/chat/completions      the text encoder as a chat model (rewriting); `stream` for SSE
    POST /v1/llmdit/encode         prompts -> the embeds stage file `encode -o` writes (bytes)
    POST /v1/images/generations    prompt -> PNGs (b64_json) that carry their settings
    GET  /v1/llmdit/status         the queue and the running job's progress
    GET  /v1/llmdit/templates      the prompt templates (the web page's list)
    GET  /                         a small web page (files in serve/web, no build step)

Model work goes through one queue (`work.WorkQueue`); a request that cannot wait gets 503. Every
refused request gets `{"error": {"message", "type", "param", "code"}}` naming the field at fault.
"""

import asyncio
import base64
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import LlmditError, ModelError
from llmdit_cli.remote import RemoteError
from llmdit_cli.serve import schemas
from llmdit_cli.serve.settings import (
    ENCODE_EXTRA,
    ENCODE_SECTIONS,
    GENERATE_SECTIONS,
    ApiError,
    ServerSettings,
    parse_size,
)
from llmdit_cli.serve.work import Cancelled, Job, JobReport, QueueFull, WorkQueue

WEB = Path(__file__).parent / "web"
log = logging.getLogger("llmdit.serve")


@dataclass
class Limits:
    max_queue: int = 8
    max_body_bytes: int = 1 << 20
    max_prompt_chars: int = 4000
    max_prompts: int = 16
    max_images: int = 4
    max_pixels: int = 2048 * 2048
    max_tokens: int = 1024
    max_steps: int = 100
    max_side: int = 4096
    max_messages: int = 64
    max_lora_models: int = 2  # models loaded with LoRAs, besides the base one


@dataclass
class ServeConfig:
    model: str
    settings: ServerSettings
    components: str = "all"  # encoder | dit | all
    token: str | None = None
    encoder_url: str | None = None  # dit: prompts are encoded by this llmdit server
    encoder_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    trusted_hosts: list[str] | None = None


def create_app(cfg: ServeConfig, engine=None):
    """The FastAPI app for `cfg`; the engine is made (and the components loaded) on startup."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from llmdit_cli.engine import Engine

    state: dict[str, Any] = {"engine": engine or Engine(), "queue": None, "started": int(time.time())}

    @asynccontextmanager
    async def lifespan(app):
        state["queue"] = WorkQueue(cfg.limits.max_queue, log.info)
        yield
        state["queue"].close()

    # No Swagger page: it loads from a CDN, and the endpoints are documented in docs/serve.md.
    app = FastAPI(
        title="llmdit", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.mount("/static", StaticFiles(directory=WEB), name="static")
    if cfg.trusted_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        # Without a token on a loopback address: refuse other Host names (DNS rebinding).
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=cfg.trusted_hosts)

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        if exc.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(error_body(exc.message, exc.kind, exc.param), exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error"), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request, exc: Exception):
        message, kind, param = describe(exc, cfg.settings)
        if kind == "server_error":
            log.error("request failed", exc_info=exc)
        return JSONResponse(error_body(message, kind, param), status_for(kind))

    def check_auth(request: Request) -> None:
        if cfg.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.strip().encode(), cfg.token.encode()):
            raise ApiError(401, "missing or wrong API token (Authorization: Bearer TOKEN)", kind="authentication_error")

    def need(component: str, forwarded: bool = False) -> None:
        """`forwarded`: a DiT server answers it through its encoder server."""
        if cfg.components not in ("all", component) and not (forwarded and cfg.encoder_url):
            raise ApiError(
                404, f"this server holds the {cfg.components} only (--components {cfg.components})", kind="not_found"
            )

    async def body_of(request: Request, model: type):
        check_auth(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            # A browser sends text/plain across sites without asking; JSON needs a preflight.
            raise ApiError(415, f"Content-Type must be application/json, not {kind or 'none'!r}")
        data = await read_limited(request, cfg.limits.max_body_bytes)
        return validate(model, parse_json(data))

    async def run(request: Request, label: str, work):
        """Queue `work(job)` and wait for it; a client that goes away cancels it."""
        try:
            job = state["queue"].submit(label, work)
        except QueueFull as exc:
            raise ApiError(503, f"server busy: {exc}; retry later", kind="server_busy") from None
        waiting = asyncio.wrap_future(job.future)
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # read, so never "unretrieved"
        while True:
            done, _ = await asyncio.wait({waiting}, timeout=0.2)
            if done:
                return result_of(waiting, cfg.settings)
            if await request.is_disconnected():
                job.cancel()
                raise ApiError(499, "client closed the request")

    # -- plain GETs ----------------------------------------------------------------------------

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": cfg.model, "components": cfg.components, "queue": state["queue"].status()}

    @app.get("/v1/models")
    async def models(request: Request):
        check_auth(request)
        return {
            "object": "list",
            "data": [{"id": cfg.model, "object": "model", "created": state["started"], "owned_by": "llmdit"}],
        }

    @app.get("/v1/llmdit/status")
    async def status(request: Request):
        check_auth(request)
        return state["queue"].status()

    @app.get("/v1/llmdit/templates")
    async def templates(request: Request):
        check_auth(request)
        from llmdit_cli.prompt_templates import available

        def listing():
            folders = cfg.settings.resolve({}, ()).settings.templates.dir
            return [{"name": n, "category": t.meta.category} for n, t in available(folders).items()]

        try:
            return {"data": await asyncio.to_thread(listing)}
        except LlmditError as exc:
            raise ApiError(500, str(exc), kind="server_error") from None

    @app.get("/")
    async def page():
        return FileResponse(WEB / "index.html", media_type="text/html")

    # -- encode --------------------------------------------------------------------------------

    @app.post("/v1/llmdit/encode")
    async def encode(request: Request):
        need("encoder", forwarded=True)
        body = await body_of(request, schemas.EncodeRequest)
        check_prompts(body.prompts, "prompts", cfg.limits)
        check_llmdit(body.llmdit, cfg.limits)
        r = await asyncio.to_thread(cfg.settings.resolve, body.llmdit, ENCODE_SECTIONS, ENCODE_EXTRA)

        def work(job: Job) -> bytes:
            from llmdit_cli.engine import EncodeRequest
            from llmdit_cli.remote import encode_remote
            from llmdit_cli.workflows import embeds_bytes

            if cfg.components == "dit":  # no text encoder here: its encoder server answers
                where = f"--encoder-url {cfg.encoder_url}"
                return encode_remote(
                    cfg.encoder_url, body.prompts, body.llmdit, body.with_negative, cfg.encoder_key, 300.0, where
                )
            eng = state["engine"]
            e = eng.encode(EncodeRequest(r, body.prompts, body.with_negative), JobReport(job, log.info))
            return embeds_bytes(eng.model(r)[0], e)

        data = await run(request, f"encode {len(body.prompts)} prompt(s)", work)
        headers = {"Content-Disposition": 'attachment; filename="prompts.embeds.safetensors"'}
        return Response(data, media_type="application/octet-stream", headers=headers)

    # -- images --------------------------------------------------------------------------------

    @app.post("/v1/images/generations")
    async def images(request: Request):
        need("dit")
        body = await body_of(request, schemas.ImagesRequest)
        req = await asyncio.to_thread(image_request, body, cfg, state["engine"])

        def work(job: Job) -> list[dict[str, Any]]:
            from llmdit_cli.pngmeta import png_bytes

            report = JobReport(job, log.info)
            if cfg.encoder_url:
                req.embeds = remote_embeds(cfg, req)
            results = state["engine"].generate(req, report)
            keep_few_lora_models(state, req.settings, cfg.limits.max_lora_models)
            records = [cfg.settings.client_record(g.settings) for g in results]
            return [
                {
                    "b64_json": base64.b64encode(png_bytes(g.image, record)).decode(),
                    "llmdit": {"seed": g.seed, "settings": record},
                }
                for g, record in zip(results, records)
            ]

        data = await run(request, f"generate {len(req.seeds)} image(s)", work)
        return {"created": int(time.time()), "data": data}

    # -- chat ----------------------------------------------------------------------------------

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        need("encoder")
        body = await body_of(request, schemas.ChatRequest)
        if body.model is not None and body.model != cfg.model:
            raise ApiError(404, f"model {body.model!r} is not served here (GET /v1/models)", "model", "not_found")
        messages = chat_messages(body, cfg.limits)
        sampling = chat_sampling(body, cfg.limits)
        r = await asyncio.to_thread(cfg.settings.resolve, {}, ENCODE_SECTIONS)
        thinking = bool(body.chat_template_kwargs and body.chat_template_kwargs.enable_thinking)
        reply_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())

        def chat_request(job: Job, on_text=None):
            from llmdit_cli.engine import ChatRequest

            return ChatRequest(r, messages, sampling, thinking, on_text, job.cancelled.is_set)

        if not body.stream:

            def work(job: Job):
                return state["engine"].chat(chat_request(job), JobReport(job, log.info))

            text, n_prompt, n_reply = await run(request, "chat", work)
            return {
                "id": reply_id,
                "object": "chat.completion",
                "created": created,
                "model": cfg.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish_reason(n_reply, sampling),
                    }
                ],
                "usage": usage(n_prompt, n_reply),
            }

        import queue as queue_module

        pieces: queue_module.Queue[str] = queue_module.Queue()

        def stream_work(job: Job):
            return state["engine"].chat(chat_request(job, pieces.put), JobReport(job, log.info))

        try:
            job = state["queue"].submit("chat (stream)", stream_work)
        except QueueFull as exc:
            raise ApiError(503, f"server busy: {exc}; retry later", kind="server_busy") from None

        def chunk(delta: dict, finish: str | None = None, extra: dict | None = None) -> str:
            obj = {
                "id": reply_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": cfg.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **(extra or {}),
            }
            return f"data: {json.dumps(obj)}\n\n"

        async def events():
            try:
                yield chunk({"role": "assistant", "content": ""})
                quiet_since = time.monotonic()
                while not (job.future.done() and pieces.empty()):
                    try:
                        yield chunk({"content": pieces.get_nowait()})
                        quiet_since = time.monotonic()
                    except queue_module.Empty:
                        if time.monotonic() - quiet_since > 10:  # waiting in the queue: keep proxies from closing
                            yield ": keepalive\n\n"
                            quiet_since = time.monotonic()
                        await asyncio.sleep(0.01)
                try:
                    _, n_prompt, n_reply = job.future.result()
                except Exception as exc:  # noqa: BLE001 - headers are sent: the error goes in the stream
                    message, kind, param = describe(exc, cfg.settings)
                    if kind == "server_error":
                        log.error("streamed chat failed", exc_info=exc)
                    yield f"data: {json.dumps(error_body(message, kind, param))}\n\n"
                else:
                    yield chunk({}, finish_reason(n_reply, sampling))
                    if body.stream_options and body.stream_options.include_usage:
                        obj = {"id": reply_id, "object": "chat.completion.chunk", "created": created}
                        obj.update(model=cfg.model, choices=[], usage=usage(n_prompt, n_reply))
                        yield f"data: {json.dumps(obj)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                if not job.future.done():
                    job.cancel()  # the client went away mid-stream

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


# -- helpers (no FastAPI) ------------------------------------------------------------------------


def _version() -> str:
    from llmdit_cli import __version__

    return __version__


def error_body(message: str, kind: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": None}}


async def read_limited(request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes is over the limit of {limit} (--max-body-bytes)")
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes (--max-body-bytes)")
    return bytes(data)


def parse_json(data: bytes) -> Any:
    """The body as JSON: NaN, Infinity and numbers too large for a float are refused (they would
    run a whole job and then fail to serialise), as is nesting too deep to parse."""

    def refuse(constant: str):
        raise ApiError(400, f"the request body holds {constant}, which is not a JSON number")

    try:
        raw = json.loads(data, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"the request body is not JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    check_finite(raw, "")
    return raw


def check_finite(value: Any, where: str) -> None:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"{where or 'body'}: the number is out of range", where or None)
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, f"{where}.{i}" if where else str(i))


def check_llmdit(settings: dict[str, Any], limits: Limits) -> None:
    """Server limits on settings that cost time or memory (the engine checks the rest)."""
    for name, value in settings.items():
        if isinstance(value, str) and len(value) > limits.max_prompt_chars:
            raise ApiError(
                400,
                f"llmdit.{name}: {len(value)} characters, over the limit of {limits.max_prompt_chars}",
                f"llmdit.{name}",
            )
    for name, limit in (("steps", limits.max_steps), ("max_length", 4096), ("caption_length", 4096)):
        value = settings.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise ApiError(400, f"llmdit.{name}: {value}, over the limit of {limit}", f"llmdit.{name}")


def keep_few_lora_models(state: dict[str, Any], r, keep: int) -> None:
    """Each LoRA set is its own loaded model: keep the `keep` used last (the base model stays)."""

    if not r.settings.lora.loras:
        return
    order: list = state.setdefault("lora_models", [])
    key = state["engine"].key_for(r)
    if key in order:
        order.remove(key)
    order.append(key)
    while len(order) > keep:
        state["engine"].release(order.pop(0))


def validate(model: type, raw: Any):
    """`raw` as `model`, or a 400 that names the first field at fault."""
    from pydantic import ValidationError

    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        union_tags = {"str", "int", "float", "bool", "list", "dict", "TextPart", "ImagePart"}
        parts = [str(x) for x in err["loc"] if str(x) not in union_tags and "[" not in str(x) and "-" not in str(x)]
        where = ".".join(parts) or "body"
        if err["type"] == "extra_forbidden":
            raise ApiError(400, f"unknown field: {where}", where) from None
        if err["type"] == "missing":
            raise ApiError(400, f"missing field: {where}", where) from None
        raise ApiError(400, f"{where}: {err['msg']}", where) from None


def check_prompts(prompts: list[str], name: str, limits: Limits) -> None:
    if len(prompts) > limits.max_prompts:
        raise ApiError(400, f"{name}: {len(prompts)} prompts, at most {limits.max_prompts} per request", name)
    for i, p in enumerate(prompts):
        where = f"{name}.{i}" if name == "prompts" else name
        if not p.strip():
            raise ApiError(400, f"{where}: empty prompt", where)
        if len(p) > limits.max_prompt_chars:
            raise ApiError(400, f"{where}: {len(p)} characters, over the limit of {limits.max_prompt_chars}", where)


def image_request(body, cfg: ServeConfig, engine):
    """The engine request for an images body: settings checked and prepared before it queues."""
    from llmdit_cli.engine import GenerateRequest
    from llmdit_cli.workflows import seeds_for

    check_prompts([body.prompt], "prompt", cfg.limits)
    check_llmdit(body.llmdit, cfg.limits)
    if body.n > cfg.limits.max_images:
        raise ApiError(400, f"n: {body.n} images, at most {cfg.limits.max_images} per request (--max-images)", "n")
    if body.model is not None and body.model != cfg.model:
        raise ApiError(404, f"model {body.model!r} is not served here (GET /v1/models)", "model", "not_found")
    settings = dict(body.llmdit)
    seed = settings.pop("seed", None)
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        raise ApiError(400, "llmdit.seed: a whole number from 0", "llmdit.seed")
    size = parse_size(body.size)
    if size and max(size) > cfg.limits.max_side:
        raise ApiError(400, f"size {body.size}: a side over {cfg.limits.max_side} pixels", "size")
    if size:
        settings.update(width=size[0], height=size[1])
    r = cfg.settings.resolve(settings, GENERATE_SECTIONS)
    req = GenerateRequest(r, seeds=seeds_for([seed] if seed is not None else None, body.n), prompts=[body.prompt])
    try:
        engine.prepare(req)
    except LlmditError as exc:
        message, param = cfg.settings.message(exc)
        raise ApiError(400, message, param) from None
    g = r.settings.generation
    if g.width * g.height > cfg.limits.max_pixels:
        raise ApiError(400, f"size {g.width}x{g.height}: over the limit of {cfg.limits.max_pixels} pixels", "size")
    return req


def remote_embeds(cfg: ServeConfig, req):
    """The prompt's embeddings from the encoder server (a DiT-only server)."""
    from llmdit_cli.workflows import remote_encode

    where = f"--encoder-url {cfg.encoder_url}"
    return remote_encode(cfg.encoder_url, req.prompts, req.settings, cfg.encoder_key, 300.0, where)


def chat_messages(body, limits: Limits) -> list[tuple[str, str]]:
    if len(body.messages) > limits.max_messages:
        raise ApiError(400, f"messages: {len(body.messages)}, at most {limits.max_messages}", "messages")
    out = []
    for i, m in enumerate(body.messages):
        if isinstance(m.content, str):
            text = m.content
        else:
            if any(p.type == "image_url" for p in m.content):
                raise ApiError(
                    400,
                    f"messages.{i}.content: image input needs a vision model, and none is loaded here",
                    f"messages.{i}.content",
                )
            text = "".join(p.text for p in m.content)
        if len(text) > limits.max_prompt_chars:
            raise ApiError(
                400,
                f"messages.{i}.content: {len(text)} characters, over the limit of {limits.max_prompt_chars}",
                f"messages.{i}.content",
            )
        out.append(("system" if m.role == "developer" else m.role, text))
    return out


def chat_sampling(body, limits: Limits):
    import random

    from llmdit_cli.rewriting import Sampling

    wanted = body.max_completion_tokens or body.max_tokens or min(256, limits.max_tokens)
    if wanted > limits.max_tokens:
        name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(400, f"{name}: {wanted}, over the limit of {limits.max_tokens} (--max-tokens)", name)
    seed = body.seed if body.seed is not None else random.SystemRandom().randrange(2**31)
    return Sampling(body.temperature, body.top_p, body.top_k, body.min_p, wanted, seed)


def finish_reason(n_reply: int, sampling) -> str:
    return "length" if n_reply >= sampling.max_new_tokens else "stop"


def usage(n_prompt: int, n_reply: int) -> dict[str, int]:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_reply, "total_tokens": n_prompt + n_reply}


def describe(exc: BaseException, settings: ServerSettings) -> tuple[str, str, str | None]:
    """(message, error type, field) for a failed job."""
    if isinstance(exc, ApiError):
        return exc.message, exc.kind, exc.param
    if isinstance(exc, RemoteError):
        return f"the encoder server failed: {exc}", "upstream_error", None
    if isinstance(exc, ModelError):
        message, param = settings.message(exc)
        return message, "server_error", param
    if isinstance(exc, LlmditError):
        message, param = settings.message(exc)
        return message, "invalid_request_error", param
    if isinstance(exc, Cancelled):
        return "cancelled: the client went away", "cancelled", None
    lines = str(exc).strip().splitlines()
    return f"internal error: {type(exc).__name__}: {lines[0] if lines else ''}", "server_error", None


def result_of(done, settings: ServerSettings):
    """A finished job's result, or its failure as an ApiError (500 for what is not the client's fault)."""
    exc = done.exception()
    if exc is None:
        return done.result()
    message, kind, param = describe(exc, settings)
    if kind == "server_error":
        log.error("job failed", exc_info=exc)
    raise ApiError(status_for(kind), message, param, kind)


def status_for(kind: str) -> int:
    return {"invalid_request_error": 400, "cancelled": 499, "upstream_error": 502}.get(kind, 500)
