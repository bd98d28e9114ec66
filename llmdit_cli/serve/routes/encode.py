"""POST /v1/llmdit/encode: prompts -> the embeds stage file `llmdit encode -o` writes (bytes)."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from llmdit_cli.serve import replies, schemas
from llmdit_cli.serve.checks import check_llmdit, check_prompts
from llmdit_cli.serve.deps import ServerState, documented, holding, json_body, run_job
from llmdit_cli.serve.settings import ENCODE_EXTRA, ENCODE_SECTIONS
from llmdit_cli.serve.work import Job, JobReport

log = logging.getLogger("llmdit.serve")
router = APIRouter()


@router.post(
    "/v1/llmdit/encode",
    openapi_extra=documented(schemas.EncodeBody),
    response_class=Response,
    responses=replies.EMBEDS_FILE,
)
async def encode(
    request: Request,
    state: ServerState = Depends(holding("encoder", forwarded=True)),
    body: schemas.EncodeBody = Depends(json_body(schemas.EncodeBody)),
):
    cfg = state.cfg
    check_prompts(body.prompts, "prompts", cfg.limits)
    check_llmdit(body.llmdit, cfg.limits)
    r = await asyncio.to_thread(cfg.settings.resolve, body.llmdit, ENCODE_SECTIONS, ENCODE_EXTRA)
    if r.encoder.template and cfg.components != "dit":  # (a DiT server's encoder server looks it up)
        await asyncio.to_thread(cfg.settings.check_template, r)

    def work(job: Job) -> bytes:
        from llmdit_cli.engine import EncodeRequest
        from llmdit_cli.remote import encode_remote
        from llmdit_cli.workflows import embeds_bytes

        if cfg.components == "dit":  # no text encoder here: its encoder server answers
            where = f"--encoder-url {cfg.encoder_url}"
            return encode_remote(
                cfg.encoder_url, body.prompts, body.llmdit, body.with_negative, cfg.encoder_key, 300.0, where
            )
        e = state.engine.encode(EncodeRequest(r, body.prompts, body.with_negative), JobReport(job, log.info))
        return embeds_bytes(state.engine.model(r)[0], e)

    data = await run_job(request, state, f"encode {len(body.prompts)} prompt(s)", work)
    headers = {"Content-Disposition": 'attachment; filename="prompts.embeds.safetensors"'}
    return Response(data, media_type="application/octet-stream", headers=headers)
