"""The engine: loaded models for one process, and the requests it serves.

Thread safety: a model's transformer carries per-run state while it denoises (SLG and DyPE hooks,
RoPE position tables, a training-time transformer swapped in), so every request holds its model's
lock from encoding to decoding; requests for different models (another folder, other LoRAs or
placement) run in parallel. A LoRA set is part of what identifies a model, so LoRA scales never
change under a running request.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any, Protocol

from llmdit_cli import workflows as wf
from llmdit_cli.config import Resolved
from llmdit_cli.engine.requests import (
    DecodeRequest,
    Decomposed,
    DecomposeRequest,
    EditLayerRequest,
    EncodeRequest,
    Generated,
    GenerateRequest,
    LayersDecodeRequest,
)
from llmdit_cli.errors import InputError, UsageError, setting
from llmdit_cli.families import check_feature


class Reporter(Protocol):
    """Where the engine sends hints, status lines and progress (the CLI's Output is one)."""

    def hint(self, message: str) -> None: ...
    def log(self, message: str) -> None: ...
    def status(self, message: str): ...
    def progress(self, description: str, total: int): ...


class Silent:
    def hint(self, message: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def status(self, message: str):
        return nullcontext()

    @contextmanager
    def progress(self, description: str, total: int):
        yield lambda done, total_, info="": None


def _chat_model(handle):
    """(model, tokenizer, device) that rewrite and chat: the folder's own rewriter when it has
    one, else its text encoder as a causal LM (the same loaded weights keep serving `encode`)."""
    from llmdit_cli import rewriting
    from llmdit_cli.stages import run_device

    own = handle.rewriter()
    if own is not None:
        lm, tokenizer = own
        return lm, tokenizer, lm.device
    pipe = handle.pipeline("tokenizer", "text_encoder")
    return rewriting.causal_lm(pipe.text_encoder), pipe.tokenizer, run_device(pipe, pipe.text_encoder)


def batch_key(req: GenerateRequest) -> str:
    """What requests batched together share: every value of the plan but the negative prompt
    (its embeddings are per image), and the input (txt2img only, or one and the same input)."""
    import json

    values = {k: v for k, v in req.settings.values.items() if k != "generation.negative_prompt"}
    return json.dumps([values, req.mode, id(req.init) if req.init is not None else None, req.decode], default=str)


class Engine:
    """Loads each model once and serves encode / generate / decode requests, from any thread."""

    def __init__(self) -> None:
        self._models: dict[tuple, Any] = {}
        self._locks: dict[tuple, threading.RLock] = {}
        self._guard = threading.Lock()

    # -- models ------------------------------------------------------------------------------------

    @staticmethod
    def key_for(r: Resolved) -> tuple:
        """What identifies the model settings run: its reference, LoRA stack and placement."""
        s = r.settings
        placement = s.optimization.placement()
        return (s.model, tuple(s.lora.loras), tuple(str(v) for v in placement.values()))

    def model(self, r: Resolved, task: str = "text-to-image"):
        """The handle for the settings' model (components load on first use) and its lock; a
        model whose family does not do `task` (`families.Family.task`) is refused."""
        from llmdit_cli.families import check_task

        key = self.key_for(r)
        with self._guard:
            found = self._models.get(key)
        if found is None:
            # Opening validates devices and reads LoRA files (or asks the Hub): not under the guard,
            # so requests for models already open never wait for it. A race opens a handle twice.
            handle = wf.open_model(r)
            with self._guard:
                self._models.setdefault(key, handle)
                self._locks.setdefault(key, threading.RLock())
        with self._guard:
            handle, lock = self._models[key], self._locks[key]
        check_task(handle.family, task, handle.ref, handle.key)
        return handle, lock

    def settled(self, r: Resolved, task: str = "text-to-image"):
        """`model`'s handle and lock, and the plan with what it leaves unset taken from the
        model's family."""
        handle, lock = self.model(r, task)
        return handle, lock, wf.fill_family_defaults(r, handle.defaults(), handle.variant)

    def adopt(self, handle, r: Resolved) -> None:
        """Serve requests for `r`'s model with an already opened handle (the trainer's)."""
        with self._guard:
            self._models[self.key_for(r)] = handle
            self._locks.setdefault(self.key_for(r), threading.RLock())

    def release(self, key: tuple) -> None:
        """Drop a model (by `key_for`) so its memory can go; a later request loads it again."""
        with self._guard:
            self._models.pop(key, None)

    # -- encode ------------------------------------------------------------------------------------

    def encode(self, req: EncodeRequest, report: Reporter | None = None):
        """Prompt embeddings (`workflows.Embeds`) for the request's prompts."""
        report = report or Silent()
        handle, lock, r = self.settled(req.settings)
        wf.validate_encoding(r, handle)
        with lock, report.status(f"encoding {len(req.prompts)} prompt(s) with {handle.ref}"):
            return wf.encode(handle, list(req.prompts), r, with_negative=req.with_negative, report=report)

    # -- rewrite -----------------------------------------------------------------------------------

    def rewrite(self, req, report: Reporter | None = None) -> list[str]:
        """Each prompt rewritten by the model's chat model (`RewriteRequest`; `_chat_model`)."""
        from llmdit_cli import rewriting
        from llmdit_cli.prompt_templates import find

        report = report or Silent()
        sampling = req.sampling or rewriting.Sampling()
        sampling.check()
        handle, lock, r = self.settled(req.settings)
        check_feature(handle.family, "rewrite", "model", handle.ref)
        t = find(req.template or rewriting.template_for(r), r.templates.dir)
        fmt = t.chat_format()
        if req.image is not None:
            with lock:
                return self._rewrite_from_image(req, r, t, handle, sampling, report)
        with lock, report.status(f"rewriting {len(req.prompts)} prompt(s) with {handle.ref}"):
            lm, tokenizer, device = _chat_model(handle)
            replies = [rewriting.generate_local(lm, tokenizer, fmt.format(p), sampling, device) for p in req.prompts]
        return [rewriting.clean(r, req.keep_thinking) for r in replies]

    def chat(self, req, report: Reporter | None = None) -> tuple[str, int, int]:
        """The reply to a conversation (`ChatRequest`) by the model's chat model (`_chat_model`),
        with the prompt's and the reply's token counts."""
        from llmdit_cli import rewriting
        from llmdit_cli.prompts import chat_text

        report = report or Silent()
        sampling = req.sampling or rewriting.Sampling()
        sampling.check()
        text = chat_text(req.messages, req.enable_thinking)
        handle, lock = self.model(req.settings)
        check_feature(handle.family, "rewrite", "model", handle.ref)
        with lock, report.status(f"chat reply with {handle.ref}"):
            lm, tokenizer, device = _chat_model(handle)
            streamer = rewriting.TextPieces(tokenizer, req.on_text) if req.on_text else None
            raw = rewriting.generate_local(lm, tokenizer, text, sampling, device, streamer, req.should_stop)
            prompt_tokens = len(tokenizer(text).input_ids)
            reply_tokens = len(tokenizer(raw).input_ids)
        return rewriting.reply_text(raw), prompt_tokens, reply_tokens

    @staticmethod
    def _rewrite_from_image(req, r: Resolved, template, handle, sampling, report) -> list[str]:
        from llmdit_cli import rewriting, vision

        image = vision.open_image(req.image, "--image")
        pl, v = handle.placement, r.vl
        with report.status(f"loading {v.model or vision.DEFAULT_VL_MODEL}"):
            model = vision.load(
                v.model, v.device or pl.device_for("text_encoder"), pl.torch_dtype(), pl.cpu_offload != "none"
            )
        with report.status(f"rewriting {len(req.prompts)} prompt(s) from {req.image}"):
            replies = [model.reply(image, p, template.system, sampling) for p in req.prompts]
        return [rewriting.clean(r, req.keep_thinking) for r in replies]

    # -- generate ----------------------------------------------------------------------------------

    def prepare(self, req: GenerateRequest, report: Reporter | None = None) -> GenerateRequest:
        """The request with its plan filled (input size, model family defaults) and checked, before
        anything loads. `generate` prepares a request that is not; preparing first lets a caller
        check everything (and plan its output paths) before the work starts."""
        if req.settings.prepared:
            return req
        report = report or Silent()
        r = req.settings
        handle, _ = self.model(r)
        if req.mode == "img2img" and req.init is None:
            raise UsageError("img2img needs an input image or latents")
        if req.mode == "img2img":
            check_feature(handle.family, "img2img", "model", handle.ref)
        lim = handle.limits()
        if req.init is not None and not wf.is_image(req.init):
            f = lim.vae_scale_factor
            height, width = req.init_size or (int(req.init.shape[-2]) * f, int(req.init.shape[-1]) * f)
            r = r.with_defaults({"height": height, "width": width}, "latents file")
        elif req.init is not None:
            size = _size_from_image(r, req, lim.size_multiple, report)
            r = r.with_defaults(size, "input image")
        r = wf.fill_family_defaults(r, handle.defaults(), handle.variant)
        if r.control.model and not r.control.image:
            # A ControlNet steers by a control image; without one (a server's, a config's) it stays out.
            if "control.model" in r.given("control"):
                report.hint(f"{setting('control.model')} is not used without {setting('control.image')}")
            r = r.with_value("control_model", None, "default (no control image given)")
        tiles = {"optimization.vae_tile_size", "optimization.vae_tile_overlap"} & set(r.given("optimization"))
        if tiles and not r.optimization.vae_tiling:  # given now, not a config's standing choice
            report.hint(
                f"{setting('optimization.vae_tile_size')} and {setting('optimization.vae_tile_overlap')} "
                f"shape the tiles of {setting('optimization.vae_tiling')}; without it the VAE decodes whole"
            )
        wf.validate(r, handle, report)
        wf.check_control(r, handle, req.mode, report)
        return replace(req, settings=r.as_prepared())

    def generate(
        self, req: GenerateRequest, report: Reporter | None = None, transformer=None, each=None
    ) -> list[Generated]:
        """Make the request's images; `transformer` runs in place of the model's own (validation
        images of a transformer being trained). `each(generated)` is told of every image as soon
        as it is made (and decoded), in order, while the next ones are being made."""
        return self.generate_many([req], report, transformer, each)[0]

    def generate_many(
        self, reqs: list[GenerateRequest], report: Reporter | None = None, transformer=None, each=None
    ) -> list[list[Generated]]:
        """The images of several requests whose plans differ only in what a batch may mix
        (`batch_key`: prompts, seeds, the negative prompt), made `generation.batch_size` to a
        transformer forward across requests; each request's images, in order."""
        report = report or Silent()
        reqs = [self.prepare(q, report) for q in reqs]
        if len({batch_key(q) for q in reqs}) > 1:
            raise UsageError("requests batched together must share every setting but prompts and seeds")
        r = reqs[0].settings
        handle, lock = self.model(r)
        with lock:
            jobs, owners = [], []
            for n, q in enumerate(reqs):
                e = self._embeddings(q, handle, report)
                planned = wf.plan_jobs(e, q.seeds, q.settings, handle, q.mode)
                jobs += [replace(job, index=len(jobs) + k) for k, job in enumerate(planned)]
                owners += [n] * len(planned)
            start = self._start_latents(reqs[0], handle)
            made: list[Generated] = []

            kept = _kept_input(reqs[0])

            def finished(batch, latents) -> None:
                # One VAE call per batch, as the stock pipelines decode theirs.
                if not reqs[0].decode:
                    images = None
                elif kept is not None:
                    images = [kept.copy() for _ in batch]
                else:
                    images = handle.code.decode_latents(handle.pipeline("vae"), latents)
                for k, job in enumerate(batch):
                    made.append(Generated(latents[k : k + 1], job.settings, images[k] if images else None))
                    if each is not None:
                        each(made[-1])

            with handle.using_transformer(transformer):
                fresh = not handle.loaded("transformer")
                with report.status(f"loading {handle.ref}"):
                    handle.pipeline("transformer", "vae")
                if fresh and handle.auto_attention:  # said once, when the transformer loads
                    report.log(f"attention: {handle.auto_attention}")
                if fresh and handle.float8_layers:
                    counts = ", ".join(f"{n} in the {c.replace('_', ' ')}" for c, n in handle.float8_layers.items())
                    report.log(f"fp8: Linear layers in float8: {counts}")
                wf.run_jobs(handle, jobs, r, report, start, finished)
        return [[g for g, o in zip(made, owners) if o == n] for n in range(len(reqs))]

    def _embeddings(self, req: GenerateRequest, handle, report):
        """The request's embeddings (given, or encoded now), checked against the model and CFG."""
        r = req.settings
        cfg = handle.code.wants_negative(r.generation)
        e = req.embeds
        if e is None:
            with report.status(f"encoding {len(req.prompts)} prompt(s)"):
                e = wf.encode(handle, req.prompts, r, with_negative=cfg, report=report)
        wf.check_embeds_fit(e, handle, report, r)
        if cfg and len(e.uncond) != len(e.cond):
            raise UsageError(
                f"{e.source}: {setting('generation.guidance_scale')} {r.generation.guidance_scale} "
                f"needs negative embeddings, and this file has none"
            )
        return e

    def _start_latents(self, req: GenerateRequest, handle):
        """The img2img start: the image (encoded in the loop), or the given latents, validated."""
        init, r = req.init, req.settings
        if init is None or wf.is_image(init):
            return init
        name = req.init_source or "latents"
        lim = handle.limits()
        channels = lim.channels
        if init.ndim != 4 or init.shape[1] != channels:
            raise InputError(
                f"{name}: latents of shape {list(init.shape)} do not fit this transformer ({channels} channels)"
            )
        if init.shape[0] != 1:
            raise InputError(f"{name}: holds {init.shape[0]} latents; img2img takes one")
        f, g = lim.vae_scale_factor, r.generation
        if tuple(init.shape[-2:]) != (g.height // f, g.width // f):
            raise InputError(
                f"{name}: latents are {init.shape[-1] * f}x{init.shape[-2] * f}, but "
                f"{setting('generation.width')}/{setting('generation.height')} ask for {g.width}x{g.height}"
            )
        return init

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, req: DecodeRequest, report: Reporter | None = None) -> list:
        """PIL images of latents `[B, C, h, w]`."""
        report = report or Silent()
        handle, lock = self.model(req.settings)
        lat = req.latents
        if lat is None or lat.ndim != 4:
            raise InputError(f"{req.source}: no 4-D 'latents' tensor in the file")
        channels = handle.limits().channels
        if lat.shape[1] != channels:
            raise InputError(
                f"{req.source}: latents have {lat.shape[1]} channels, the VAE of {setting('model')} "
                f"{handle.ref} takes {channels}"
            )
        with lock:
            with report.status(f"decoding with {handle.ref}"):
                handle.pipeline("vae")
            return self._decode_all(handle, [lat[i : i + 1] for i in range(lat.shape[0])])

    # -- layers ------------------------------------------------------------------------------------

    def prepare_layers(self, r: Resolved, task: str):
        """The layer model's handle (nothing loaded), its lock, and the plan with the family's
        defaults filled: settings are complete, and checked, before a weight loads."""
        before = self.key_for(r)
        handle, lock = self.model(r, task)
        r = wf.fill_layer_defaults(r, handle)  # may switch offload on (CUDA), which is part of the key
        after = self.key_for(r)
        if after != before:
            with self._guard:
                self._models[after] = self._models.pop(before)
                self._locks[after] = self._locks.pop(before)
        return handle, lock, r

    def decompose(self, req: DecomposeRequest, report: Reporter | None = None) -> Decomposed:
        """The image's RGBA layers (Qwen-Image-Layered through diffusers' own pipeline)."""
        report = report or Silent()
        handle, lock, r = self.prepare_layers(req.settings, "layer decomposition")
        code, s = handle.code, r.layered
        with lock:
            with report.status(f"loading {handle.ref}"):
                pipe = handle.pipeline("tokenizer", "text_encoder", "transformer", "vae")
            prompt = req.prompt
            if not prompt.strip():
                with report.status("captioning the image (no --prompt given)"):
                    prompt = code.caption(pipe, req.image, s.resolution, s.caption_language == "en")
                report.log(f"caption: {prompt}")
            count = code.auto_layers(req.image) if s.layers == "auto" else s.layers
            if s.layers == "auto":
                report.log(f"layers auto: {count} (the image's colour regions; docs/layers.md)")
            params = code.LayeredParams(
                prompt, s.negative_prompt, s.true_cfg_scale, count, s.steps, s.resolution, s.cfg_normalize
            )
            with report.progress("decomposing", params.steps) as tick:
                layers, latents = code.decompose(
                    pipe,
                    req.image,
                    params,
                    wf.generator(req.seed),
                    lambda done: tick(done, params.steps),
                    req.keep_latents,
                )
        record = wf.layer_settings(
            r,
            handle,
            req.seed,
            layers=params.layers,
            resolution=params.resolution,
            prompt=prompt,
            cfg_normalize=params.cfg_normalize,
            captioned=not req.prompt.strip(),
            caption_language=s.caption_language,
            **({"layers_auto": True} if s.layers == "auto" else {}),
        )
        return Decomposed(layers, latents, record)

    def edit_layer(self, req: EditLayerRequest, report: Reporter | None = None):
        """`req.image` (PIL RGB) edited by the instruction (Qwen-Image-Edit-Plus, true CFG), and the
        settings record of the edit."""
        report = report or Silent()
        handle, lock, r = self.prepare_layers(req.settings, "layer editing")
        s = r.layered
        params = handle.code.EditParams(req.instruction, s.negative_prompt, s.true_cfg_scale, s.steps)
        with lock:
            with report.status(f"loading {handle.ref}"):
                pipe = handle.pipeline("tokenizer", "text_encoder", "transformer", "vae")
            with report.progress("editing", params.steps) as tick:
                image = handle.code.edit(
                    pipe, req.image, params, wf.generator(req.seed), lambda d: tick(d, params.steps)
                )
        return image, wf.layer_settings(r, handle, req.seed, instruction=req.instruction)

    def edit_stack_layer(self, stack, i: int, instruction: str, r: Resolved, seed: int, report=None):
        """Layer `i` of a layer folder (`layerstack.Stack`) edited: its RGB by the instruction, its
        alpha put back exactly, the old file kept as a version and the edit recorded. Returns the
        kept version's name and the edit's settings record. The caller holds the folder's lock."""
        from llmdit_cli.layerstack import replace_layer, with_alpha_of

        rgba = stack.image(i)
        edited, record = self.edit_layer(EditLayerRequest(r, rgba.convert("RGB"), instruction, seed), report)
        return replace_layer(stack, i, with_alpha_of(edited, rgba), record), record

    def decode_layers(self, req: LayersDecodeRequest, report: Reporter | None = None) -> list:
        """RGBA layers (PIL, bottom first) of layered latents, by the layered model's VAE."""
        report = report or Silent()
        handle, lock = self.model(req.settings, "layer decomposition")
        lat = req.latents
        channels = handle.limits().channels
        if lat.shape[1] != channels:
            raise InputError(
                f"{req.source}: latents have {lat.shape[1]} channels, the VAE of {setting(handle.key)} "
                f"{handle.ref} takes {channels}"
            )
        with lock:
            with report.status(f"decoding with {handle.ref}"):
                pipe = handle.pipeline("vae")
                return handle.code.decode_layers(pipe, lat)

    @staticmethod
    def _decode_all(handle, latents: list) -> list:
        pipe = handle.pipeline("vae")
        return [handle.code.decode_latents(pipe, lat)[0] for lat in latents]


def _kept_input(req: GenerateRequest):
    """img2img at strength 0 denoises nothing, and keeps the input image as it is (at the output
    size) rather than its VAE round trip; None when the image is to be decoded. With a ControlNet
    and a mask, the image is made from noise whatever the strength."""
    r = req.settings
    if req.mode != "img2img" or r.generation.strength != 0 or not wf.is_image(req.init):
        return None
    if r.generation.mask and r.control.model:
        return None
    from PIL import Image

    size = (r.generation.width, r.generation.height)
    image = req.init.convert("RGB")
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def _size_from_image(r: Resolved, req: GenerateRequest, step: int, report: Reporter) -> dict[str, int]:
    """The sides the plan leaves unset, from the img2img input image (cut to the model's multiple;
    a hint says so): a side given by a flag, config or record resizes the input instead."""
    source = req.init_source or "the input image"
    pixels = {"width": req.init.width, "height": req.init.height}
    unset = {side: n // step * step for side, n in pixels.items() if r[side] is None}
    seen = f"{pixels['width']}x{pixels['height']}"
    if 0 in unset.values():
        raise InputError(
            f"{source}: {seen} pixels, less than the {step} a side this model needs "
            f"(or give {setting('generation.width')} and {setting('generation.height')})"
        )
    if any(n != pixels[side] for side, n in unset.items()):
        final = {side: unset.get(side, r[side]) for side in pixels}
        report.hint(
            f"{source} is {seen}; made at {final['width']}x{final['height']} (sides in multiples of "
            f"{step}; {setting('generation.width')}/{setting('generation.height')} choose)"
        )
    return unset
