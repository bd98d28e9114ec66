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
    b64_json: str
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
    images: list[JobImage]


class JobError(BaseModel):
    message: str
    type: str
    param: str | None


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


BINARY = {"schema": {"type": "string", "format": "binary"}}
EMBEDS_FILE = {
    200: {"description": "the embeds stage file (safetensors)", "content": {"application/octet-stream": BINARY}}
}
CHAT_STREAM = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}}
