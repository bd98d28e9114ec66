"""The one generation API: an `Engine` holds the models a process has loaded and serves typed
requests (encode, generate / img2img, decode, rewrite, chat). Commands, `sweep`, `serve`, the
trainer's validation, the evaluator and the benchmarks all call it."""

from llmdit_cli.engine.engine import Engine, Reporter
from llmdit_cli.engine.requests import (
    ChatRequest,
    DecodeRequest,
    EncodeRequest,
    Generated,
    GenerateRequest,
    RewriteRequest,
)

__all__ = [
    "ChatRequest",
    "DecodeRequest",
    "EncodeRequest",
    "Engine",
    "GenerateRequest",
    "Generated",
    "Reporter",
    "RewriteRequest",
]
