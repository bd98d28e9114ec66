"""POST /v1/images/generations: prompt -> PNGs (b64_json) that carry their settings."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from llmdit_cli.errors import LlmditError
from llmdit_cli.serve import schemas
from llmdit_cli.serve.checks import check_llmdit, check_prompts
from llmdit_cli.serve.config import ServeConfig
from llmdit_cli.serve.deps import ServerState, documented, holding, json_body, run_job
from llmdit_cli.serve.settings import GENERATE_SECTIONS, ApiError, parse_image_size
from llmdit_cli.serve.work import Job, JobReport

log = logging.getLogger("llmdit.serve")
router = APIRouter()


@router.post("/v1/images/generations", openapi_extra=documented(schemas.ImagesBody))
async def images(
    request: Request,
    state: ServerState = Depends(holding("dit")),
    body: schemas.ImagesBody = Depends(json_body(schemas.ImagesBody)),
):
    cfg = state.cfg
    req = await asyncio.to_thread(image_request, body, cfg, state.engine)

    def work(job: Job) -> list[dict[str, Any]]:
        from llmdit_cli.pngmeta import png_bytes

        if cfg.encoder_url:
            req.embeds = remote_embeds(cfg, req, state.engine)
        results = state.engine.generate(req, JobReport(job, log.info))
        keep_few_lora_models(state, req.settings)
        records = [cfg.settings.client_record(g.settings) for g in results]
        return [
            {
                "b64_json": base64.b64encode(png_bytes(g.image, rec)).decode(),
                "llmdit": {"seed": g.seed, "settings": rec},
            }
            for g, rec in zip(results, records)
        ]

    data = await run_job(request, state, f"generate {len(req.seeds)} image(s)", work)
    return {"created": int(time.time()), "data": data}


def image_request(body, cfg: ServeConfig, engine):
    """The engine request for an images body: settings checked and prepared before it queues."""
    from llmdit_cli.engine import GenerateRequest
    from llmdit_cli.workflows import seeds_for

    check_image_body(body, cfg)
    settings = dict(body.llmdit)
    seed = settings.pop("seed", None)
    if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        raise ApiError(400, "llmdit.seed: a whole number from 0", "llmdit.seed")
    size = parse_image_size(body.size)
    if size and max(size) > cfg.limits.max_side:
        raise ApiError(400, f"size {body.size}: a side over {cfg.limits.max_side} pixels", "size")
    if size:
        settings.update(width=size[0], height=size[1])
    r = cfg.settings.resolve(settings, GENERATE_SECTIONS)
    req = GenerateRequest(r, seeds=seeds_for([seed] if seed is not None else None, body.n), prompts=[body.prompt])
    try:
        req = engine.prepare(req)
    except LlmditError as exc:
        message, param = cfg.settings.message(exc)
        raise ApiError(400, message, param) from None
    g = req.settings.generation
    if g.width * g.height > cfg.limits.max_pixels:
        raise ApiError(400, f"size {g.width}x{g.height}: over the limit of {cfg.limits.max_pixels} pixels", "size")
    return req


def check_image_body(body, cfg: ServeConfig) -> None:
    check_prompts([body.prompt], "prompt", cfg.limits)
    check_llmdit(body.llmdit, cfg.limits)
    if body.n > cfg.limits.max_images:
        raise ApiError(400, f"n: {body.n} images, at most {cfg.limits.max_images} per request (--max-images)", "n")
    if body.model is not None and body.model != cfg.model:
        raise ApiError(404, f"model {body.model!r} is not served here (GET /v1/models)", "model", "not_found")


def remote_embeds(cfg: ServeConfig, req, engine):
    """The prompt's embeddings from the encoder server (a DiT-only server)."""
    from llmdit_cli.workflows import remote_encode

    where = f"--encoder-url {cfg.encoder_url}"
    handle = engine.model(req.settings)[0]
    return remote_encode(cfg.encoder_url, req.prompts, req.settings, handle, cfg.encoder_key, 300.0, where)


def keep_few_lora_models(state: ServerState, r) -> None:
    """Each LoRA set is its own loaded model: keep the --max-lora-models used last (the base model stays)."""
    if not r.lora.loras:
        return
    order, key = state.lora_models, state.engine.key_for(r)
    if key in order:
        order.remove(key)
    order.append(key)
    while len(order) > state.cfg.limits.max_lora_models:
        state.engine.release(order.pop(0))
