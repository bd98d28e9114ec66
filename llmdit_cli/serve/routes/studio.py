"""The studio's own API (what the page uses; clients may too): work as jobs with progress, and
prompt rewriting.

    POST   /v1/llmdit/generate     an images request (img2img with `image` or `parent`) -> 202 {job}
    GET    /v1/llmdit/jobs/{id}    state, step/steps, result (history entries), error
    DELETE /v1/llmdit/jobs/{id}    cancel: a waiting job never starts, a running one stops at its next step
    POST   /v1/llmdit/rewrite      prompts -> rewritten prompts (= `llmdit rewrite`), recorded in the history
    GET    /v1/llmdit/settings     every request-time setting (`catalog.py`)
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from fastapi import APIRouter, Depends, Request

from llmdit_cli.errors import LlmditError
from llmdit_cli.serve import replies, schemas
from llmdit_cli.serve.deps import ServerState, authorized, documented, holding, json_body, run_job, submit
from llmdit_cli.serve.errors import describe
from llmdit_cli.serve.routes.images import ImageWork, image_request, uploaded_image
from llmdit_cli.serve.settings import IMAGE_FIELDS, ApiError
from llmdit_cli.serve.work import Job, JobReport

log = logging.getLogger("llmdit.serve")
router = APIRouter()


@router.get("/v1/llmdit/settings", response_model=replies.SettingList)
async def settings(state: ServerState = Depends(authorized)):
    """Every setting a request may give, with the served model's defaults."""
    if state.catalog is None:
        state.catalog = await asyncio.to_thread(describe_catalog, state)
    return {"model": state.cfg.model, "data": state.catalog}


def describe_catalog(state: ServerState) -> list[dict[str, Any]]:
    from llmdit_cli.serve.catalog import describe_settings, served_defaults

    handle = state.engine.model(state.cfg.settings.base())[0]
    return describe_settings(state.cfg.settings, served_defaults(state.cfg.settings, handle))


@router.post(
    "/v1/llmdit/generate",
    status_code=202,
    response_model=replies.JobStarted,
    openapi_extra=documented(schemas.StudioImagesBody),
)
async def generate(
    state: ServerState = Depends(holding("dit")),
    body: schemas.StudioImagesBody = Depends(json_body(schemas.StudioImagesBody, images=1 + len(IMAGE_FIELDS))),
):
    """Start making images (img2img from `image`, a data URL, or `parent`, a history entry);
    follow the job at /v1/llmdit/jobs/{id}."""
    init = await asyncio.to_thread(init_image, state, body)
    req = await asyncio.to_thread(image_request, body, state.cfg, state.engine, init)
    work = ImageWork(state, req, parent=body.parent, wrap=results)
    task = "img2img" if req.mode == "img2img" else "generate"
    job = submit(state, f"{task} {len(req.seeds)} image(s)", work, task)
    return {"job": job.id, "state": job.state}


def results(made: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "images": [
            {"history": m["history"], "seed": m["seed"], "settings": m["settings"], "url": file_url(m["file"])}
            for m in made
        ]
    }


def file_url(name: str) -> str:
    return f"/v1/llmdit/files/{name}"


def init_image(state: ServerState, body):
    """The img2img input a studio request names, opened as the CLI opens `--image` (RGB)."""
    from llmdit_cli.history import is_id

    if body.image is not None and body.parent is not None:
        raise ApiError(400, "image and parent: give one img2img input, not both", "parent")
    if body.image is not None:
        from llmdit_cli.serve.uploads import data_url_bytes

        return uploaded_image(state, data_url_bytes(body.image, "image", state.cfg.limits.max_image_bytes), "image")
    if body.parent is None:
        return None
    entry = state.history.get(body.parent) if is_id(body.parent) else None
    if entry is None or not entry.files:
        raise ApiError(404, f"parent: no history entry {body.parent!r} with an image", "parent", "not_found")
    return uploaded_image(state, (state.history.files / entry.files[0]).read_bytes(), "parent")


@router.get("/v1/llmdit/jobs/{job_id}", response_model=replies.JobState)
async def job_state(job_id: str, state: ServerState = Depends(authorized)):
    return describe_job(find_job(state, job_id), state)


@router.delete("/v1/llmdit/jobs/{job_id}", response_model=replies.JobState)
async def cancel_job(job_id: str, state: ServerState = Depends(authorized)):
    job = find_job(state, job_id)
    job.cancel()
    return describe_job(job, state)


def find_job(state: ServerState, job_id: str) -> Job:
    job = state.queue.job(job_id)
    if job is None:
        raise ApiError(
            404, f"no job {job_id!r} (finished jobs are kept for a while, then forgotten)", None, "not_found"
        )
    return job


def describe_job(job: Job, state: ServerState) -> dict[str, Any]:
    """A job as clients see it: a cancelled one reads `cancelled` from the moment it is asked to stop."""
    p = job.progress
    out: dict[str, Any] = {
        "id": job.id,
        "task": job.task,
        "state": "cancelled" if job.cancelled.is_set() and job.state != "done" else job.state,
        "stage": p.get("stage"),
        "step": p.get("done"),
        "steps": p.get("total"),
        "result": None,
        "error": None,
    }
    if job.future.done() and not job.future.cancelled():
        exc = job.future.exception()
        if exc is None:
            result = job.future.result()
            out["result"] = result if isinstance(result, dict) else None  # a studio job's images
        elif out["state"] != "cancelled":
            message, kind, param = describe(exc, state.cfg.settings)
            out["error"] = {"message": message, "type": kind, "param": param}
    return out


@router.post("/v1/llmdit/rewrite", response_model=replies.RewriteReply, openapi_extra=documented(schemas.RewriteBody))
async def rewrite(
    request: Request,
    state: ServerState = Depends(holding("encoder")),
    body: schemas.RewriteBody = Depends(json_body(schemas.RewriteBody, images=1)),
):
    """Each prompt rewritten with a rewriter template (= `llmdit rewrite` with the same options)."""
    from llmdit_cli.serve.checks import check_prompts

    limits = state.cfg.limits
    check_prompts(body.prompts, "prompts", limits)
    if body.llmdit.max_new_tokens > limits.max_tokens:
        where = "llmdit.max_new_tokens"
        raise ApiError(
            400, f"{where}: {body.llmdit.max_new_tokens}, over the limit of {limits.max_tokens} (--max-tokens)", where
        )
    req = await asyncio.to_thread(rewrite_request, state, body)

    def work(job: Job) -> list[dict[str, Any]]:
        from llmdit_cli.rewriting import template_for

        texts = state.engine.rewrite(req, JobReport(job, log.info))
        job.check()
        template = req.template or template_for(state.engine.settled(req.settings)[2])  # the family's
        out = []
        for original, new in zip(req.prompts, texts):
            text = new or original
            record = {"template": template, "sampling": vars(req.sampling), "image": body.image is not None}
            entry = state.record("rewrite", record, prompt=original, seed=req.sampling.seed, result=text)
            out.append({"text": text, "history": entry.id})
        return out

    data = await run_job(request, state, f"rewrite {len(req.prompts)} prompt(s)", work)
    return {"data": data}


def rewrite_request(state: ServerState, body):
    from llmdit_cli import rewriting
    from llmdit_cli.engine import RewriteRequest
    from llmdit_cli.prompt_templates import find
    from llmdit_cli.serve.uploads import image_setting

    s = body.llmdit
    seed = s.seed if s.seed is not None else random.SystemRandom().randrange(2**31)
    sampling = rewriting.Sampling(s.temperature, s.top_p, s.top_k, s.min_p, s.max_new_tokens, seed)
    settings = state.cfg.settings
    r = settings.base()
    try:
        if body.template is not None:
            find(body.template, r.templates.dir)
    except LlmditError as exc:
        raise ApiError(400, f"template: {exc}", "template") from None
    image = None
    if body.image is not None:
        image = image_setting(body.image, settings.uploads, "image", state.cfg.limits.max_image_bytes)
    return RewriteRequest(r, list(body.prompts), body.template, sampling, body.keep_thinking, image)
