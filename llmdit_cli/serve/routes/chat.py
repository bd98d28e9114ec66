"""POST /v1/chat/completions: the text encoder as a chat model (rewriting); `stream` for SSE."""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import time
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from llmdit_cli.serve import replies, schemas
from llmdit_cli.serve.checks import chat_messages, chat_sampling, finish_reason, usage
from llmdit_cli.serve.deps import ServerState, documented, holding, json_body, run_job, submit
from llmdit_cli.serve.errors import describe, error_body
from llmdit_cli.serve.settings import ENCODE_SECTIONS, ApiError
from llmdit_cli.serve.work import Job, JobReport

log = logging.getLogger("llmdit.serve")
router = APIRouter()
KEEPALIVE_S = 10  # a stream waiting in the queue says something this often, so proxies keep it open


@dataclass
class Reply:
    """What a chat reply is made of, besides its text."""

    id: str
    created: int
    model: str
    sampling: object

    def chunk(self, delta: dict, finish: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return sse({**self.head("chat.completion.chunk"), "choices": [choice]})

    def head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}


def sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


@router.post(
    "/v1/chat/completions",
    response_model=replies.ChatCompletion,
    responses=replies.CHAT_STREAM,
    openapi_extra=documented(schemas.ChatBody),
)
async def chat(
    request: Request,
    state: ServerState = Depends(holding("encoder")),
    body: schemas.ChatBody = Depends(json_body(schemas.ChatBody)),
):
    cfg = state.cfg
    if body.model is not None and body.model != cfg.model:
        raise ApiError(404, f"model {body.model!r} is not served here (GET /v1/models)", "model", "not_found")
    messages = chat_messages(body, cfg.limits)
    sampling = chat_sampling(body, cfg.limits)
    r = await asyncio.to_thread(cfg.settings.resolve, {}, ENCODE_SECTIONS)
    thinking = bool(body.chat_template_kwargs and body.chat_template_kwargs.enable_thinking)
    reply = Reply("chatcmpl-" + uuid.uuid4().hex[:24], int(time.time()), cfg.model, sampling)

    def work(job: Job, on_text=None):
        from llmdit_cli.engine import ChatRequest

        req = ChatRequest(r, messages, sampling, thinking, on_text, job.cancelled.is_set)
        return state.engine.chat(req, JobReport(job, log.info))

    if body.stream:
        return stream(state, body, reply, work)
    text, n_prompt, n_reply = await run_job(request, state, "chat", work)
    message = {"role": "assistant", "content": text}
    choice = {"index": 0, "message": message, "finish_reason": finish_reason(n_reply, sampling)}
    return {**reply.head("chat.completion"), "choices": [choice], "usage": usage(n_prompt, n_reply)}


def stream(state: ServerState, body, reply: Reply, work) -> StreamingResponse:
    """The reply as server-sent events, piece by piece; a client that goes away cancels it."""
    pieces: queue.Queue[str] = queue.Queue()
    job = submit(state, "chat (stream)", lambda j: work(j, pieces.put))
    with_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def events():
        try:
            yield reply.chunk({"role": "assistant", "content": ""})
            async for piece in texts(job, pieces):
                yield ": keepalive\n\n" if piece is None else reply.chunk({"content": piece})
            for event in ending(state, job, reply, with_usage):
                yield event
        finally:
            if not job.future.done():
                job.cancel()  # the client went away mid-stream

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def texts(job: Job, pieces: queue.Queue):
    """The reply's pieces as they come, and None (a keepalive) while none come."""
    quiet_since = time.monotonic()
    while not (job.future.done() and pieces.empty()):
        try:
            yield pieces.get_nowait()
            quiet_since = time.monotonic()
        except queue.Empty:
            if time.monotonic() - quiet_since > KEEPALIVE_S:
                yield None
                quiet_since = time.monotonic()
            await asyncio.sleep(0.01)


def ending(state: ServerState, job: Job, reply: Reply, with_usage: bool) -> list[str]:
    """The last events: the finish reason (and usage when asked), or the error (headers are sent,
    so it goes in the stream), then [DONE]."""
    try:
        _, n_prompt, n_reply = job.future.result()
    except Exception as exc:  # noqa: BLE001 - any failure is reported in the stream
        message, kind, param = describe(exc, state.cfg.settings)
        if kind == "server_error":
            log.error("streamed chat failed", exc_info=exc)
        return [sse(error_body(message, kind, param)), "data: [DONE]\n\n"]
    out = [reply.chunk({}, finish_reason(n_reply, reply.sampling))]
    if with_usage:
        out.append(sse({**reply.head("chat.completion.chunk"), "choices": [], "usage": usage(n_prompt, n_reply)}))
    return [*out, "data: [DONE]\n\n"]
