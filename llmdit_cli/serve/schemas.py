"""Request bodies of `llmdit serve`: strict (an unknown field is an error that names it), with the
OpenAI fields clients send by default accepted where they change nothing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Strict(BaseModel):
    # strict: `"stream": "yes"` or `"n": true` is an error, not a guess
    model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageUrl(Strict):
    url: str
    detail: str | None = None


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageUrl


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Annotated[TextPart | ImagePart, Field(discriminator="type")]]
    name: str | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class ChatTemplateKwargs(Strict):
    enable_thinking: bool | None = None


class ChatBody(Strict):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0, lt=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    stop: None = None
    presence_penalty: Literal[0] = 0
    frequency_penalty: Literal[0] = 0
    logprobs: Literal[False] = False
    user: str | None = None
    chat_template_kwargs: ChatTemplateKwargs | None = None


class EncodeBody(Strict):
    prompts: list[str] = Field(min_length=1)
    with_negative: bool = True
    llmdit: dict[str, Any] = Field(default_factory=dict)


class ImagesBody(Strict):
    prompt: str = Field(min_length=1)
    model: str | None = None
    n: int = Field(1, ge=1)
    size: str | None = None  # WIDTHxHEIGHT, or "auto" (the model's default)
    # url: the image's address on this server (/v1/llmdit/files/NAME, with this server's token)
    response_format: Literal["b64_json", "url"] = "b64_json"
    output_format: Literal["png"] = "png"
    user: str | None = None
    llmdit: dict[str, Any] = Field(default_factory=dict)


class StudioImagesBody(ImagesBody):
    """`POST /v1/llmdit/generate`: an images request run as a job; with `image` (a data URL) or
    `parent` (a history entry, its first image) it is img2img (`llmdit.strength`)."""

    image: str | None = None
    parent: str | None = None


def settings_from_text(value: Any) -> Any:
    """A multipart form's `llmdit` field: a JSON object given as a string."""
    import json

    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise ValueError("not a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object of settings")
    return value


class EditsBody(ImagesBody):
    """The text fields of `POST /v1/images/edits` (multipart: they arrive as strings, so numbers
    are taken from text); `llmdit` is a JSON object given as a string."""

    model_config = ConfigDict(extra="forbid", strict=False)
    _json_settings = field_validator("llmdit", mode="before")(settings_from_text)


class DecomposeBody(BaseModel):
    """The text fields of `POST /v1/llmdit/decompose`: `llmdit`, a JSON object of the layer
    settings (`layered_layers`, `layered_steps`, ... as /v1/llmdit/settings names them), `seed`
    and `prompt` (empty: the model captions the image)."""

    model_config = ConfigDict(extra="forbid")
    llmdit: dict[str, Any] = Field(default_factory=dict)
    _json_settings = field_validator("llmdit", mode="before")(settings_from_text)


class EditLayerBody(Strict):
    """`POST /v1/llmdit/stacks/{id}/edit`: `llmdit` takes `layered_steps`,
    `layered_true_cfg_scale`, `layered_negative_prompt` and `seed`."""

    layer: int = Field(ge=0)
    instruction: str = Field(min_length=1, max_length=4000)
    llmdit: dict[str, Any] = Field(default_factory=dict)


class RestackBody(Strict):
    order: list[int] | None = None  # bottom first; every layer once
    hidden: list[int] | None = None


class RevertBody(Strict):
    layer: int = Field(ge=0)
    version: int = Field(ge=1)


class RewriteSampling(Strict):
    """Sampling for `POST /v1/llmdit/rewrite` (`llmdit rewrite`'s options of the same names)."""

    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.9, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    min_p: float = Field(0.0, ge=0, lt=1)
    max_new_tokens: int = Field(256, ge=1)
    seed: int | None = Field(None, ge=0, lt=2**63)


class RewriteBody(Strict):
    prompts: list[str] = Field(min_length=1)
    template: str | None = None  # None: the served model family's (general-enhancer; demo-caption)
    image: str | None = None  # a data URL: rewrite from this image
    keep_thinking: bool = False
    llmdit: RewriteSampling = Field(default_factory=RewriteSampling)
