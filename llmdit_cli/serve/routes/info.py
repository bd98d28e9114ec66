"""Plain GETs: liveness, the model list, the queue, the template list, the web page."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from llmdit_cli.errors import LlmditError
from llmdit_cli.serve.config import WEB
from llmdit_cli.serve.deps import ServerState, authorized, server
from llmdit_cli.serve.settings import ApiError

router = APIRouter()


@router.get("/health")
async def health(state: ServerState = Depends(server)):
    cfg = state.cfg
    return {"status": "ok", "model": cfg.model, "components": cfg.components, "queue": state.queue.status()}


@router.get("/v1/models")
async def models(state: ServerState = Depends(authorized)):
    entry = {"id": state.cfg.model, "object": "model", "created": state.started, "owned_by": "llmdit"}
    return {"object": "list", "data": [entry]}


@router.get("/v1/llmdit/status")
async def status(state: ServerState = Depends(authorized)):
    return state.queue.status()


@router.get("/v1/llmdit/templates")
async def templates(state: ServerState = Depends(authorized)):
    from llmdit_cli.prompt_templates import available

    def listing():
        folders = state.cfg.settings.base().settings.templates.dir
        return [{"name": n, "category": t.meta.category} for n, t in available(folders).items()]

    try:
        return {"data": await asyncio.to_thread(listing)}
    except LlmditError as exc:
        raise ApiError(500, str(exc), kind="server_error") from None


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(WEB / "index.html", media_type="text/html")
