"""Plain GETs: liveness, the model list, the queue, the template list, the web page."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from llmdit_cli.errors import LlmditError
from llmdit_cli.serve import replies
from llmdit_cli.serve.config import WEB
from llmdit_cli.serve.deps import ServerState, authorized, server
from llmdit_cli.serve.settings import ApiError

router = APIRouter()


@router.get("/health", response_model=replies.Health)
async def health(state: ServerState = Depends(server)):
    cfg = state.cfg
    return {
        "status": "ok",
        "model": cfg.model,
        "components": cfg.components,
        "auth": cfg.token is not None,  # whether /v1 wants a token (the page asks for one first)
        "queue": state.queue.status(),
    }


@router.get("/v1/models", response_model=replies.ModelList)
async def models(state: ServerState = Depends(authorized)):
    entry = {"id": state.cfg.model, "object": "model", "created": state.started, "owned_by": "llmdit"}
    return {"object": "list", "data": [entry]}


@router.get("/v1/llmdit/status", response_model=replies.QueueState)
async def status(state: ServerState = Depends(authorized)):
    return state.queue.status()


@router.get("/v1/llmdit/templates", response_model=replies.TemplateList)
async def templates(state: ServerState = Depends(authorized)):
    from llmdit_cli.prompt_templates import available

    def listing():
        folders = state.cfg.settings.base().settings.templates.dir
        return [{"name": n, "category": t.meta.category} for n, t in available(folders).items()]

    try:
        return {"data": await asyncio.to_thread(listing)}
    except LlmditError as exc:
        raise ApiError(500, str(exc), kind="server_error") from None


@router.get("/v1/llmdit/loras", response_model=replies.LoraList)
async def loras(state: ServerState = Depends(authorized)):
    """The LoRA files in the server's --lora-dir, by the names requests give (`llmdit.lora`)."""
    return {"data": await asyncio.to_thread(lora_names, state.cfg.settings.lora_dir)}


def lora_names(folder) -> list[dict[str, str]]:
    if folder is None:
        return []
    root = folder.resolve()
    names = []
    for path in sorted(root.rglob("*.safetensors")):
        try:
            inside = root in path.resolve().parents  # a link out of the folder is not offered
        except OSError:
            inside = False
        if inside and path.is_file():
            names.append({"name": path.relative_to(root).as_posix()})
    return names[:1000]


@router.get("/", include_in_schema=False)
async def page():
    return FileResponse(WEB / "index.html", media_type="text/html")
