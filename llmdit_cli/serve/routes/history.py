"""The history of what this server (and any other on its data folder) made.

GET    /v1/llmdit/history            newest first: ?limit=&before=ID&task=&model=&q= ; `next` is the cursor
GET    /v1/llmdit/history/{id}       one entry: its settings, parent, files, and the request that remakes it
DELETE /v1/llmdit/history/{id}       the entry and its files
GET    /v1/llmdit/files/{name}       an entry's file (immutable: cached for a year)
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from llmdit_cli.history import TASKS, Entry, is_id
from llmdit_cli.serve import replies
from llmdit_cli.serve.deps import ServerState, authorized
from llmdit_cli.serve.settings import ApiError

router = APIRouter()
MAX_PAGE = 200


@router.get("/v1/llmdit/history", response_model=replies.HistoryPage)
async def history(
    state: ServerState = Depends(authorized),
    limit: int = Query(50, ge=1, le=MAX_PAGE),
    before: str | None = Query(None, max_length=20),
    task: str | None = Query(None, max_length=20),
    model: str | None = Query(None, max_length=400),
    q: str | None = Query(None, max_length=400),
):
    if before is not None and not is_id(before):
        raise ApiError(400, f"before: {before!r} is not a history id", "before")
    if task is not None and task not in TASKS:
        raise ApiError(400, f"task: {task!r} is not one of {', '.join(TASKS)}", "task")
    entries = await asyncio.to_thread(state.history.list, limit + 1, before, task, model, q)
    page = entries[:limit]
    return {
        "data": [entry_json(e) for e in page],
        "next": page[-1].id if len(entries) > limit else None,
    }


@router.get("/v1/llmdit/history/{entry_id}", response_model=replies.HistoryEntry)
async def entry(entry_id: str, state: ServerState = Depends(authorized)):
    return entry_json(await asyncio.to_thread(found, state, entry_id))


@router.delete("/v1/llmdit/history/{entry_id}", response_model=replies.Deleted)
async def delete(entry_id: str, state: ServerState = Depends(authorized)):
    if not (is_id(entry_id) and await asyncio.to_thread(state.history.delete, entry_id)):
        raise ApiError(404, f"no history entry {entry_id!r}", None, "not_found")
    return {"id": entry_id, "deleted": True}


@router.get(
    "/v1/llmdit/files/{name}",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}},
)
async def file(name: str, state: ServerState = Depends(authorized)):
    path = await asyncio.to_thread(state.history.file_path, name)
    if path is None:
        raise ApiError(404, f"no file {name!r}", None, "not_found")
    # An entry's file never changes (a new entry gets a new name): the browser may keep it.
    headers = {"Cache-Control": "private, max-age=31536000, immutable"}
    return FileResponse(path, media_type="image/png", headers=headers)


def found(state: ServerState, entry_id: str) -> Entry:
    e = state.history.get(entry_id) if is_id(entry_id) else None
    if e is None:
        raise ApiError(404, f"no history entry {entry_id!r}", None, "not_found")
    return e


def entry_json(e: Entry) -> dict[str, Any]:
    from llmdit_cli.serve.catalog import request_of

    out = e.as_dict()
    out["urls"] = [f"/v1/llmdit/files/{name}" for name in e.files]
    out["request"] = request_of(e.settings) if e.task in ("generate", "img2img") else None
    out["stack"] = e.id if e.task == "decompose" else e.settings.get("stack") if e.task == "edit" else None
    return out
