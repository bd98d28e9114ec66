"""Checks on what a request sends, before anything queues: the body (size, JSON, types), prompts,
settings and chat messages against the server's limits. Each refusal is an `ApiError` naming the
field at fault."""

from __future__ import annotations

import json
from typing import Any

from llmdit_cli.serve.config import ServerLimits
from llmdit_cli.serve.settings import ApiError

IMAGE_SETTINGS = ("vl_image", "control_image", "mask")


async def read_limited(request, limit: int, images: int = 0) -> bytes:
    """The body, refused (413) past `limit` bytes: --max-body-bytes plus room for `images` images."""
    flags = "--max-body-bytes" + (f" + {images} x --max-image-bytes" if images else "")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes is over the limit of {limit} ({flags})")
    data = bytearray()
    async for part in request.stream():
        data += part
        if len(data) > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes ({flags})")
    return bytes(data)


def parse_json(data: bytes) -> Any:
    """The body as JSON: NaN, Infinity and numbers too large for a float are refused (they would
    run a whole job and then fail to serialise), as is nesting too deep to parse."""

    def refuse(constant: str):
        raise ApiError(400, f"the request body holds {constant}, which is not a JSON number")

    try:
        raw = json.loads(data, parse_constant=refuse)
    except (ValueError, UnicodeDecodeError) as exc:
        if "integer string conversion" in str(exc):  # Python's guard on huge integers
            raise ApiError(400, "the request body holds a number of thousands of digits") from None
        raise ApiError(400, f"the request body is not JSON ({exc})") from None
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply") from None
    check_finite(raw, "")
    return raw


def check_finite(value: Any, where: str) -> None:
    import math

    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(400, f"{where or 'body'}: the number is out of range", where or None)
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_finite(v, f"{where}.{i}" if where else str(i))


def parse_body(model: type, raw: Any):
    """`raw` as `model`, or a 400 that names the first field at fault."""
    from pydantic import ValidationError

    if not isinstance(raw, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # The deepest error: where a union's members all fail, the one the value came closest to
        # (a list of parts with a bad part, rather than "should be a string").
        err = max(exc.errors(), key=lambda e: len(e["loc"]))
        loc = [str(x) for x in err["loc"]]
        if err["type"] == "extra_forbidden":  # the last part is the client's own name, as sent
            where = ".".join([*_field_path(loc[:-1]), loc[-1]])
            hint = " (send `llmdit` as one field holding a JSON object)" if loc[-1].startswith("llmdit[") else ""
            raise ApiError(400, f"unknown field: {where}{hint}", where) from None
        where = ".".join(_field_path(loc)) or "body"
        if err["type"] == "missing":
            raise ApiError(400, f"missing field: {where}", where) from None
        raise ApiError(400, f"{where}: {err['msg']}", where) from None


def _field_path(loc: list[str]) -> list[str]:
    """A pydantic error location without the union members' names and tags in it (`str`,
    `list[...]`, `function-after[...]`)."""
    union_tags = {"str", "int", "float", "bool", "list", "dict", "TextPart", "ImagePart"}
    parts = [x for x in loc if x not in union_tags and "[" not in x and "-" not in x]
    # A tagged union (chat content parts) names the member by its tag: `0.text.text` is `0.text`.
    return [x for i, x in enumerate(parts) if i == 0 or x != parts[i - 1]]


def check_llmdit(settings: dict[str, Any], limits: ServerLimits) -> None:
    """Server limits on settings that cost time or memory (the engine checks the rest)."""
    for name, value in settings.items():
        if name.replace("-", "_") in IMAGE_SETTINGS:
            continue  # bounded by --max-image-bytes (`uploads.py`)
        if isinstance(value, str) and len(value) > limits.max_prompt_chars:
            raise ApiError(
                400,
                f"llmdit.{name}: {len(value)} characters, over the limit of {limits.max_prompt_chars}",
                f"llmdit.{name}",
            )
    for name, limit in (("steps", limits.max_steps), ("max_length", 4096), ("caption_length", 4096)):
        value = settings.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise ApiError(400, f"llmdit.{name}: {value}, over the limit of {limit}", f"llmdit.{name}")


def pop_seed(settings: dict[str, Any], images: int = 1) -> list[int] | None:
    """A request's `llmdit.seed`, taken out of its settings: [seed], or None when it names none.
    Its `images` images take seed, seed+1, ...: all of them below 2^63 (the history's integers)."""
    seed = settings.pop("seed", None)
    if seed is None:
        return None
    if not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63):
        raise ApiError(400, "llmdit.seed: a whole number from 0 to 2^63-1", "llmdit.seed")
    if seed + images > 2**63:
        raise ApiError(
            400, f"llmdit.seed: with n={images} the last seed, {seed + images - 1}, is over 2^63-1", "llmdit.seed"
        )
    return [seed]


def check_prompts(prompts: list[str], name: str, limits: ServerLimits) -> None:
    if len(prompts) > limits.max_prompts:
        raise ApiError(400, f"{name}: {len(prompts)} prompts, at most {limits.max_prompts} per request", name)
    for i, p in enumerate(prompts):
        where = f"{name}.{i}" if name == "prompts" else name
        if not p.strip():
            raise ApiError(400, f"{where}: empty prompt", where)
        if len(p) > limits.max_prompt_chars:
            raise ApiError(400, f"{where}: {len(p)} characters, over the limit of {limits.max_prompt_chars}", where)


def chat_messages(body, limits: ServerLimits) -> list[tuple[str, str]]:
    if len(body.messages) > limits.max_messages:
        raise ApiError(400, f"messages: {len(body.messages)}, at most {limits.max_messages}", "messages")
    out = []
    for i, m in enumerate(body.messages):
        if isinstance(m.content, str):
            text = m.content
        else:
            if any(p.type == "image_url" for p in m.content):
                raise ApiError(
                    400,
                    f"messages.{i}.content: image input needs a vision model, and none is loaded here",
                    f"messages.{i}.content",
                )
            text = "".join(p.text for p in m.content)
        if len(text) > limits.max_prompt_chars:
            raise ApiError(
                400,
                f"messages.{i}.content: {len(text)} characters, over the limit of {limits.max_prompt_chars}",
                f"messages.{i}.content",
            )
        out.append(("system" if m.role == "developer" else m.role, text))
    return out


def chat_sampling(body, limits: ServerLimits):
    import random

    from llmdit_cli.rewriting import Sampling

    wanted = body.max_completion_tokens or body.max_tokens or min(256, limits.max_tokens)
    if wanted > limits.max_tokens:
        name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(400, f"{name}: {wanted}, over the limit of {limits.max_tokens} (--max-tokens)", name)
    seed = body.seed if body.seed is not None else random.SystemRandom().randrange(2**31)
    return Sampling(body.temperature, body.top_p, body.top_k, body.min_p, wanted, seed)


def finish_reason(n_reply: int, sampling) -> str:
    return "length" if n_reply >= sampling.max_new_tokens else "stop"


def usage(n_prompt: int, n_reply: int) -> dict[str, int]:
    return {"prompt_tokens": n_prompt, "completion_tokens": n_reply, "total_tokens": n_prompt + n_reply}
