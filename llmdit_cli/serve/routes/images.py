"""OpenAI's images API: POST /v1/images/generations (prompt -> PNGs) and POST /v1/images/edits
(an image and a prompt -> PNGs, by img2img). Both answer when the images are made, as base64 PNGs
that carry their settings; every image is in the history before the answer goes out."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from llmdit_cli.errors import LlmditError
from llmdit_cli.serve import replies, schemas
from llmdit_cli.serve.checks import check_llmdit, check_prompts, pop_seed
from llmdit_cli.serve.config import ServeConfig
from llmdit_cli.serve.deps import ServerState, documented, form_body, holding, json_body, run_job
from llmdit_cli.serve.settings import GENERATE_EXTRA, GENERATE_SECTIONS, IMAGE_FIELDS, ApiError, parse_image_size
from llmdit_cli.serve.work import Cancelled, GroupReport, Job, JobReport

log = logging.getLogger("llmdit.serve")
router = APIRouter()
EDIT_FILES = ("image", "mask")


@router.post("/v1/images/generations", response_model=replies.ImagesReply, openapi_extra=documented(schemas.ImagesBody))
async def images(
    request: Request,
    state: ServerState = Depends(holding("dit")),
    body: schemas.ImagesBody = Depends(json_body(schemas.ImagesBody, images=len(IMAGE_FIELDS))),
):
    req = await asyncio.to_thread(image_request, body, state.cfg, state.engine)
    made = await run_job(request, state, f"generate {len(req.seeds)} image(s)", ImageWork(state, req))
    return images_reply(made, body, request)


@router.post(
    "/v1/images/edits", response_model=replies.ImagesReply, openapi_extra=documented(schemas.EditsBody, EDIT_FILES)
)
async def edits(
    request: Request,
    state: ServerState = Depends(holding("dit")),
    form=Depends(form_body(schemas.EditsBody, EDIT_FILES)),
):
    body, files = form
    if "image" not in files:
        raise ApiError(400, "missing field: image", "image")
    init = await asyncio.to_thread(uploaded_image, state, files["image"], "image")
    if "mask" in files:
        body.llmdit = {**body.llmdit, "mask": await asyncio.to_thread(openai_mask, files["mask"], state)}
    req = await asyncio.to_thread(image_request, body, state.cfg, state.engine, init)
    made = await run_job(request, state, f"img2img {len(req.seeds)} image(s)", ImageWork(state, req))
    return images_reply(made, body, request)


def openai_mask(data: bytes, state: ServerState) -> str:
    """An edits request's mask as the data URL `llmdit.mask` takes. OpenAI's masks mark what to
    repaint by transparency (alpha 0); such a mask becomes white there and black elsewhere. A mask
    without transparency is taken as llmdit's own: white repaints."""
    import io

    from llmdit_cli.serve.uploads import open_image

    image, _ = open_image(data, "mask", state.cfg.limits.max_image_bytes)
    if "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255:
        image = image.getchannel("A").point(lambda a: 255 if a == 0 else 0)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode()


def uploaded_image(state: ServerState, data: bytes, field: str):
    """An uploaded img2img input as the CLI opens `--image`: RGB."""
    from llmdit_cli.serve.uploads import open_image

    image, _ = open_image(data, field, state.cfg.limits.max_image_bytes)
    return image.convert("RGB")


def images_reply(made: list[dict[str, Any]], body, request: Request) -> dict[str, Any]:
    """OpenAI's images reply: each PNG as base64, or with `response_format` url as its address
    in the history (`/v1/llmdit/files/NAME`, absolute, as this request reached the server)."""
    base = str(request.base_url).rstrip("/") if body.response_format == "url" else None
    data = []
    for m in made:
        extra = {"seed": m["seed"], "settings": m["settings"], "history": m["history"]}
        image = (
            {"url": f"{base}/v1/llmdit/files/{m['file']}"}
            if base
            else {"b64_json": base64.b64encode(m["png"]).decode()}
        )
        data.append({**image, "llmdit": extra})
    return {"created": int(time.time()), "data": data}


def image_request(body, cfg: ServeConfig, engine, init=None):
    """The engine request for an images body: settings checked and prepared before it queues;
    with `init` (a PIL image) it is img2img."""
    from llmdit_cli.engine import GenerateRequest
    from llmdit_cli.workflows import seeds_for

    check_image_body(body, cfg)
    settings = dict(body.llmdit)
    seeds = pop_seed(settings, body.n)
    size = parse_image_size(body.size)
    if size and max(size) > cfg.limits.max_side:
        raise ApiError(400, f"size {body.size}: a side over {cfg.limits.max_side} pixels", "size")
    if size:
        settings.update(width=size[0], height=size[1])
    r = cfg.settings.resolve(settings, GENERATE_SECTIONS, GENERATE_EXTRA)
    if not cfg.encoder_url:  # (a DiT server's encoder server looks its templates up)
        cfg.settings.check_template(r)
    # Images per forward are the server's choice (--max-batch): the same pixels at any size.
    r = r.with_value("batch_size", cfg.limits.max_batch, "server (--max-batch)")
    req = GenerateRequest(r, seeds=seeds_for(seeds, body.n), prompts=[body.prompt])
    if init is not None:
        req.mode, req.init, req.init_source = "img2img", init, "image"
    try:
        req = engine.prepare(req)
    except LlmditError as exc:
        message, param = cfg.settings.message(exc)
        if init is not None and message.startswith(f"{req.init_source}:"):
            param = req.init_source  # the input image's own fault (too small, say)
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


class ImageWork:
    """The queued work for an images request: make them, record each in the history, and return
    per image {png, seed, settings (as the client sees them), history (the entry's id), file},
    through `wrap`. Text-to-image requests that share every setting but prompt and seed
    (`engine.batch_key`) may run as one batch (`work.BatchableWork`): each gets its own pixels."""

    def __init__(self, state: ServerState, req, parent: str | None = None, wrap=None):
        from llmdit_cli.engine.engine import batch_key

        self.state, self.req, self.parent = state, req, parent
        self.wrap = wrap or (lambda made: made)
        self.batch_key = batch_key(req) if req.mode == "txt2img" else None

    def __call__(self, job: Job):
        kind, value = self.finish([job], self.make([self], JobReport(job, log.info)))[0]
        if kind == "exception":
            raise value
        return value

    def run_together(self, jobs: list[Job]) -> list[tuple[str, Any]]:
        return self.finish(jobs, self.make([job.work for job in jobs], GroupReport(jobs, log.info)))

    def make(self, works: list[ImageWork], report) -> list[list]:
        state = self.state
        if state.cfg.encoder_url:
            for w in works:
                w.req.embeds = remote_embeds(state.cfg, w.req, state.engine)
        made = state.engine.generate_many([w.req for w in works], report)
        keep_few_lora_models(state, self.req.settings)
        return made

    def finish(self, jobs: list[Job], made: list[list]) -> list[tuple[str, Any]]:
        """Record the jobs' images in the history, in one write for them all, and give each job its
        reply ("result", ...) or ("exception", ...); a job cancelled by now records nothing."""
        from llmdit_cli.pngmeta import png_bytes

        outcomes: list[tuple[str, Any] | None] = [None] * len(jobs)
        items, owners = [], []
        for n, (job, results) in enumerate(zip(jobs, made)):
            if job.cancelled.is_set():
                outcomes[n] = ("exception", Cancelled(job.label))
                continue
            w = job.work
            task = "img2img" if w.req.mode == "img2img" else "generate"
            for g in results:
                record = w.state.cfg.settings.client_record(g.settings)
                fields = {"prompt": g.prompt, "seed": g.seed, "parent": w.parent}
                items.append((task, record, [png_bytes(g.image, record)], fields))
                owners.append((n, g))
        try:
            entries = self.state.record_many(items) if items else []
        except BaseException as exc:  # noqa: BLE001 - every request of the write gets it
            return [o or ("exception", exc) for o in outcomes]
        replies: dict[int, list] = {n: [] for n, o in enumerate(outcomes) if o is None}
        for (n, g), entry, (_, record, files, _) in zip(owners, entries, items):
            replies[n].append(
                {"png": files[0], "seed": g.seed, "settings": record, "history": entry.id, "file": entry.files[0]}
            )
        for n, made_n in replies.items():
            outcomes[n] = ("result", jobs[n].work.wrap(made_n))
        return outcomes


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
