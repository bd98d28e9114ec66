"""Layers over HTTP: decompose an image into a stack (Qwen-Image-Layered), edit its layers
(Qwen-Image-Edit-Plus), restack, revert, export. A stack is the CLI's layer folder, kept at
`DATA_DIR/stacks/ID/` (ID: its decompose entry in the history), so `llmdit inspect` and
`llmdit edit-layer` work on it.

    POST   /v1/llmdit/decompose                 multipart: image, llmdit (JSON) -> 202 {job}; result {stack}
    GET    /v1/llmdit/stacks/{id}               layers.json, with a url per layer, version and the composite
    GET    /v1/llmdit/stacks/{id}/files/{name}  a file the record names (a layer, a version, the composite)
    GET    /v1/llmdit/stacks/{id}/source        the image it was made from
    POST   /v1/llmdit/stacks/{id}/edit          {layer, instruction, llmdit} -> 202 {job} (409 while one runs)
    POST   /v1/llmdit/stacks/{id}/restack       {order, hidden} -> the stack
    POST   /v1/llmdit/stacks/{id}/revert        {layer, version} -> the stack
    GET    /v1/llmdit/stacks/{id}/export        ?format=ora|tiff|zip
    DELETE /v1/llmdit/stacks/{id}               the stack and its history entry
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import FileResponse

from llmdit_cli.errors import LlmditError, WriteError
from llmdit_cli.serve import replies, schemas
from llmdit_cli.serve.deps import (
    ServerState,
    authorized,
    documented,
    form_body,
    json_body,
    serving,
    submit,
)
from llmdit_cli.serve.settings import ApiError
from llmdit_cli.serve.work import Job, JobReport

log = logging.getLogger("llmdit.serve")
router = APIRouter()
LAYER_SECTIONS = ("layered",)
EXPORT_TYPES = {"ora": "image/openraster", "tiff": "image/tiff", "zip": "application/zip"}


@router.post(
    "/v1/llmdit/decompose",
    status_code=202,
    response_model=replies.JobStarted,
    openapi_extra=documented(schemas.DecomposeBody, ("image",)),
)
async def decompose(
    state: ServerState = Depends(serving("layered.model", "--layered-model", "layer decomposition")),
    form=Depends(form_body(schemas.DecomposeBody, ("image",))),
):
    """Split an uploaded image into RGBA layers; the finished job's result names the stack."""
    body, files = form
    if "image" not in files:
        raise ApiError(400, "missing field: image", "image")
    planned = await asyncio.to_thread(plan_decompose, state, body, files["image"])
    job = submit(state, "decompose", lambda j: run_decompose(state, planned, j), "decompose")
    return {"job": job.id, "state": job.state}


def plan_decompose(state: ServerState, body, data: bytes) -> dict[str, Any]:
    """Everything checked before the job queues: the image, the settings, the layered model named."""
    from llmdit_cli.layerstack import sha256_of
    from llmdit_cli.serve.uploads import UPLOAD_PREFIX, keep, open_image
    from llmdit_cli.workflows import layer_plan

    limits = state.cfg.limits
    picture, _ = open_image(data, "image", limits.max_image_bytes)
    settings = dict(body.llmdit)
    seed = one_seed(settings)
    prompt = settings.pop("prompt", "")
    if not isinstance(prompt, str) or len(prompt) > limits.max_prompt_chars:
        raise ApiError(400, f"llmdit.prompt: text of at most {limits.max_prompt_chars} characters", "llmdit.prompt")
    steps = settings.get("layered_steps")
    if isinstance(steps, int) and steps > limits.max_steps:
        raise ApiError(
            400, f"llmdit.layered_steps: {steps}, over the limit of {limits.max_steps}", "llmdit.layered_steps"
        )
    r = layer_plan(state.cfg.settings.resolve(settings, LAYER_SECTIONS), "layered.model")
    kept = keep(state.history.uploads, data, "image", limits.max_image_bytes)
    source = {"file": UPLOAD_PREFIX + kept.name, "sha256": sha256_of(data), "size": list(picture.size)}
    return {"r": r, "image": picture.convert("RGBA"), "seed": seed, "prompt": prompt, "source": source}


def one_seed(settings: dict[str, Any]) -> int:
    """The request's seed (`checks.pop_seed`), or a random one."""
    from llmdit_cli.serve.checks import pop_seed
    from llmdit_cli.workflows import seeds_for

    return seeds_for(pop_seed(settings), 1)[0]


def run_decompose(state: ServerState, p: dict[str, Any], job: Job) -> dict[str, Any]:
    from llmdit_cli import __version__
    from llmdit_cli.engine import DecomposeRequest
    from llmdit_cli.layerstack import new_record, write_new_folder

    engine, history = state.engine, state.history
    result = engine.decompose(DecomposeRequest(p["r"], p["image"], p["seed"], p["prompt"]), JobReport(job, log.info))
    job.check()  # cancelled at the last step: nothing is recorded
    handle = engine.model(p["r"], "layer decomposition")[0]
    record = new_record(len(result.layers), result.layers[0].size, result.settings, p["source"], __version__)
    prompt = result.settings.get("prompt", "")
    with history.recording("decompose", handle.ref, handle.family.name, result.settings, 1, prompt, p["seed"]) as e:
        folder = write_new_folder(str(history.stack_dir(e.id)), result.layers, record)
        (history.files / e.files[0]).write_bytes((folder / record["composite"]).read_bytes())
    return {"stack": e.id, "history": e.id}


# -- one stack ----------------------------------------------------------------------------------


def open_stack(state: ServerState, stack_id: str):
    from llmdit_cli.history import is_id
    from llmdit_cli.layerstack import read_stack

    entry = state.history.get(stack_id) if is_id(stack_id) else None
    if entry is None or entry.task != "decompose":
        raise ApiError(404, f"no stack {stack_id!r}", None, "not_found")
    try:
        return read_stack(str(state.history.stack_dir(stack_id)))
    except LlmditError as exc:
        raise ApiError(500, f"stack {stack_id}: {exc}", None, "server_error") from None


def stack_json(state: ServerState, stack_id: str, stack) -> dict[str, Any]:
    """The record with a url per file (each with its change time, so a browser fetches a layer
    again once it was edited) and whether an edit is running."""
    base = f"/v1/llmdit/stacks/{stack_id}/files/"

    def url(name: str) -> str:
        return f"{base}{name}?v={(stack.folder / name).stat().st_mtime_ns}"

    rec = stack.record
    layers = []
    for i, entry in enumerate(rec["layers"]):
        versions = [
            {"version": int(v.rsplit(".v", 1)[1].split(".")[0]), "file": v, "url": url(v)} for v in entry["versions"]
        ]
        layers.append(
            {
                "index": i,
                "file": entry["file"],
                "url": url(entry["file"]),
                "hidden": i in rec["hidden"],
                "versions": versions,
            }
        )
    return {
        "id": stack_id,
        "record": rec,
        "layers": layers,
        "order": rec["order"],
        "hidden": rec["hidden"],
        "composite_url": url(rec.get("composite", "composite.png")),
        "source_url": f"/v1/llmdit/stacks/{stack_id}/source",
        "busy": busy_job(state, stack_id) is not None,
    }


def busy_job(state: ServerState, stack_id: str) -> Job | None:
    job = state.stack_jobs.get(stack_id)
    return job if job is not None and job.state in ("queued", "running") else None


def refuse_if_busy(state: ServerState, stack_id: str) -> None:
    job = busy_job(state, stack_id)
    if job is not None:
        raise ApiError(409, f"stack {stack_id} is being edited (job {job.id}); wait for it to finish", None, "conflict")


@router.get("/v1/llmdit/stacks/{stack_id}", response_model=replies.StackState)
async def get_stack(stack_id: str, state: ServerState = Depends(authorized)):
    stack = await asyncio.to_thread(open_stack, state, stack_id)
    return stack_json(state, stack_id, stack)


@router.get("/v1/llmdit/stacks/{stack_id}/files/{name}", response_class=FileResponse, responses=replies.PNG_FILE)
async def stack_file(stack_id: str, name: str, state: ServerState = Depends(authorized)):
    stack = await asyncio.to_thread(open_stack, state, stack_id)
    rec = stack.record
    known = {rec.get("composite", "composite.png")}
    for entry in rec["layers"]:
        known |= {entry["file"], *entry["versions"]}
    if name not in known or not (stack.folder / name).is_file():
        raise ApiError(404, f"no file {name!r} in stack {stack_id}", None, "not_found")
    # A layer's name stays when an edit replaces it: the browser asks again (the url's ?v= changes).
    return FileResponse(stack.folder / name, media_type="image/png", headers={"Cache-Control": "no-cache"})


@router.get("/v1/llmdit/stacks/{stack_id}/source", response_class=FileResponse, responses=replies.PNG_FILE)
async def stack_source(stack_id: str, state: ServerState = Depends(authorized)):
    from llmdit_cli.serve.uploads import upload_path

    stack = await asyncio.to_thread(open_stack, state, stack_id)
    path = upload_path(stack.record.get("source", {}).get("file", ""), state.history.uploads)
    if path is None:
        raise ApiError(404, f"stack {stack_id}: its source image is not on this server", None, "not_found")
    return FileResponse(path, headers={"Cache-Control": "private, max-age=31536000, immutable"})


@router.post(
    "/v1/llmdit/stacks/{stack_id}/edit",
    status_code=202,
    response_model=replies.JobStarted,
    openapi_extra=documented(schemas.EditLayerBody),
)
async def edit(
    stack_id: str,
    state: ServerState = Depends(serving("layered.edit_model", "--edit-model", "layer editing")),
    body: schemas.EditLayerBody = Depends(json_body(schemas.EditLayerBody)),
):
    """Edit one layer by an instruction; the old file stays as a version."""
    stack = await asyncio.to_thread(open_stack, state, stack_id)
    if not 0 <= body.layer < stack.count:
        raise ApiError(400, f"layer: {body.layer}, but the stack has layers 0 to {stack.count - 1}", "layer")
    if not body.instruction.strip():
        raise ApiError(400, "instruction: empty", "instruction")
    refuse_if_busy(state, stack_id)
    settings = dict(body.llmdit)
    seed = one_seed(settings)
    from llmdit_cli.workflows import layer_plan

    r = await asyncio.to_thread(
        lambda: layer_plan(state.cfg.settings.resolve(settings, LAYER_SECTIONS), "layered.edit_model")
    )
    job = submit(state, f"edit layer {body.layer}", lambda j: run_edit(state, stack_id, body, r, seed, j), "edit")
    state.stack_jobs[stack_id] = job
    return {"job": job.id, "state": job.state}


def run_edit(state: ServerState, stack_id: str, body, r, seed: int, job: Job) -> dict[str, Any]:
    from llmdit_cli.layerstack import locked, read_stack

    engine, history = state.engine, state.history
    folder = history.stack_dir(stack_id)
    with locked(folder):
        stack = read_stack(str(folder))
        kept, record = engine.edit_stack_layer(stack, body.layer, body.instruction, r, seed, JobReport(job, log.info))
        stack.write_composite()
        png = stack.path(body.layer).read_bytes()
    handle = engine.model(r, "layer editing")[0]
    settings = {**record, "layer": body.layer, "kept": kept, "stack": stack_id}
    entry = history.add(
        "edit", handle.ref, handle.family.name, settings, [png], prompt=body.instruction, seed=seed, parent=stack_id
    )
    return {"stack": stack_id, "layer": body.layer, "kept": kept, "history": entry.id}


@router.post(
    "/v1/llmdit/stacks/{stack_id}/restack",
    response_model=replies.StackState,
    openapi_extra=documented(schemas.RestackBody),
)
async def restack(
    stack_id: str,
    state: ServerState = Depends(authorized),
    body: schemas.RestackBody = Depends(json_body(schemas.RestackBody)),
):
    """A new order (bottom first) and the hidden layers; the composite is rebuilt."""
    return await asyncio.to_thread(change_stack, state, stack_id, lambda s: apply_restack(s, body))


def apply_restack(stack, body) -> None:
    from llmdit_cli.layerstack import restack as set_stack

    n = stack.count
    if body.order is not None and sorted(body.order) != list(range(n)):
        raise ApiError(400, f"order: list each layer 0 to {n - 1} once", "order")
    if body.hidden is not None and not all(0 <= i < n for i in body.hidden):
        raise ApiError(400, f"hidden: layer numbers 0 to {n - 1}", "hidden")
    set_stack(stack, body.order, hidden=sorted(set(body.hidden)) if body.hidden is not None else None)


@router.post(
    "/v1/llmdit/stacks/{stack_id}/revert",
    response_model=replies.StackState,
    openapi_extra=documented(schemas.RevertBody),
)
async def revert(
    stack_id: str,
    state: ServerState = Depends(authorized),
    body: schemas.RevertBody = Depends(json_body(schemas.RevertBody)),
):
    """A layer back to one of its kept versions (the current file is kept as a new version)."""
    return await asyncio.to_thread(change_stack, state, stack_id, lambda s: apply_revert(s, body))


def apply_revert(stack, body) -> None:
    from llmdit_cli.layerstack import revert_layer

    if not 0 <= body.layer < stack.count:
        raise ApiError(400, f"layer: {body.layer}, but the stack has layers 0 to {stack.count - 1}", "layer")
    try:
        revert_layer(stack, body.layer, body.version)
    except WriteError:
        raise  # the server's own failure: a 500, logged (`errors.describe`)
    except LlmditError as exc:
        raise ApiError(400, f"version: {exc}", "version") from None


def change_stack(state: ServerState, stack_id: str, change) -> dict[str, Any]:
    """`change(stack)` under the folder's lock, then the composite rebuilt; 409 while an edit runs."""
    from llmdit_cli.layerstack import locked, read_stack

    stack = open_stack(state, stack_id)
    refuse_if_busy(state, stack_id)
    try:
        with locked(stack.folder):
            stack = read_stack(str(stack.folder))
            change(stack)
            stack.write_composite()
    except WriteError:
        raise
    except LlmditError as exc:  # the lock is another process's
        raise ApiError(409, str(exc), None, "conflict") from None
    return stack_json(state, stack_id, stack)


@router.get("/v1/llmdit/stacks/{stack_id}/export", response_class=Response, responses=replies.EXPORT_FILE)
async def export(
    stack_id: str,
    state: ServerState = Depends(authorized),
    format: str = Query("ora", pattern="^(ora|tiff|zip)$"),
):
    """The stack as one file: OpenRaster (GIMP, Krita), a layered TIFF, or a zip of the folder."""
    data = await asyncio.to_thread(export_bytes, state, stack_id, format)
    headers = {"Content-Disposition": f'attachment; filename="stack-{stack_id}.{format}"'}
    return Response(data, media_type=EXPORT_TYPES[format], headers=headers)


def export_bytes(state: ServerState, stack_id: str, kind: str) -> bytes:
    import tempfile
    import zipfile
    from io import BytesIO

    from llmdit_cli.layerstack import LAYERS_JSON
    from llmdit_cli.layerstack import export as write_export

    stack = open_stack(state, stack_id)
    if kind == "zip":
        buf = BytesIO()
        rec = stack.record
        names = [LAYERS_JSON, rec.get("composite", "composite.png")]
        names += [n for e in rec["layers"] for n in (e["file"], *e["versions"])]
        with zipfile.ZipFile(buf, "w") as z:
            for name in names:
                z.write(stack.folder / name, f"stack-{stack_id}/{name}")
        return buf.getvalue()
    with tempfile.TemporaryDirectory(dir=state.history.root) as tmp:
        path = f"{tmp}/stack.{kind}"
        write_export(stack, stack.images(), kind, path)
        with open(path, "rb") as fh:
            return fh.read()


@router.delete("/v1/llmdit/stacks/{stack_id}", response_model=replies.Deleted)
async def delete(stack_id: str, state: ServerState = Depends(authorized)):
    await asyncio.to_thread(open_stack, state, stack_id)
    refuse_if_busy(state, stack_id)
    await asyncio.to_thread(state.history.delete, stack_id)
    return {"id": stack_id, "deleted": True}
