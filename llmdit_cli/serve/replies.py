"""Response bodies of `llmdit serve`, as /openapi.json describes them (FastAPI checks each reply
against its model). Image settings records are objects whose keys depend on the model family."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class QueueState(BaseModel):
    waiting: int
    max_queue: int
    running: dict[str, Any] | None
    served: int


class Health(BaseModel):
    status: Literal["ok"]
    model: str
    components: str
    auth: bool
    queue: QueueState


class ModelEntry(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelEntry]


class TemplateEntry(BaseModel):
    name: str
    category: str


class TemplateList(BaseModel):
    data: list[TemplateEntry]


class LoraEntry(BaseModel):
    name: str


class LoraList(BaseModel):
    data: list[LoraEntry]


class Setting(BaseModel):
    key: str
    name: str
    section: str
    panel: str
    type: str
    default: Any = None
    model_default: Any = None
    choices: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    help: str


class SettingList(BaseModel):
    model: str
    data: list[Setting]


class ImageExtra(BaseModel):
    seed: int
    settings: dict[str, Any]
    history: str


class ImageItem(BaseModel):
    b64_json: str | None = None  # response_format b64_json (the default)
    url: str | None = None  # response_format url
    llmdit: ImageExtra


class ImagesReply(BaseModel):
    created: int
    data: list[ImageItem]


class JobStarted(BaseModel):
    job: str
    state: str


class JobImage(BaseModel):
    history: str
    seed: int
    settings: dict[str, Any]
    url: str


class JobResult(BaseModel):
    """A job's result: the images it made, or the stack a decompose or an edit made or changed."""

    images: list[JobImage] | None = None
    stack: str | None = None
    history: str | None = None
    layer: int | None = None
    kept: str | None = None


class JobError(BaseModel):
    message: str
    type: str
    param: str | None


class ErrorDetail(JobError):
    code: str | None = None


class ErrorReply(BaseModel):
    """Every refused request's body (OpenAI's shape): `param` names the field at fault."""

    error: ErrorDetail


class JobState(BaseModel):
    id: str
    task: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str | None
    step: int | None
    steps: int | None
    result: JobResult | None
    error: JobError | None


class Rewritten(BaseModel):
    text: str
    history: str


class RewriteReply(BaseModel):
    data: list[Rewritten]


class HistoryEntry(BaseModel):
    id: str
    created: float
    task: str
    model: str
    family: str
    prompt: str
    seed: int | None
    settings: dict[str, Any]
    result: str | None
    parent: str | None
    files: list[str]
    urls: list[str]
    request: dict[str, Any] | None
    stack: str | None = None  # the layer stack a decompose made or an edit changed


class HistoryPage(BaseModel):
    data: list[HistoryEntry]
    next: str | None


class Deleted(BaseModel):
    id: str
    deleted: bool


class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: Literal["stop", "length"]


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    """The reply without `stream`; with it, server-sent events of `chat.completion.chunk` objects."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class StackVersion(BaseModel):
    version: int
    file: str
    url: str


class StackLayer(BaseModel):
    index: int
    file: str
    url: str
    hidden: bool
    versions: list[StackVersion]


class StackState(BaseModel):
    """A stack: its layers.json (`record`), a url per layer, version and the composite."""

    id: str
    record: dict[str, Any]
    layers: list[StackLayer]
    order: list[int]
    hidden: list[int]
    composite_url: str
    source_url: str
    busy: bool


BINARY = {"schema": {"type": "string", "format": "binary"}}
PNG_FILE = {200: {"content": {"image/png": BINARY}}}
EXPORT_FILE = {
    200: {
        "description": "the stack as one file",
        "content": {"image/openraster": BINARY, "image/tiff": BINARY, "application/zip": BINARY},
    }
}
EMBEDS_FILE = {
    200: {"description": "the embeds stage file (safetensors)", "content": {"application/octet-stream": BINARY}}
}
CHAT_STREAM = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}
