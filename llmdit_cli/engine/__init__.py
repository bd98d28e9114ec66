"""The one generation API: an `Engine` holds the models a process has loaded and serves typed
requests (encode, generate / img2img, decode, rewrite, chat; decompose and edit-layer for
the Qwen-Image layer models). Commands, `sweep`, `serve`, the
trainer's validation, the evaluator and the benchmarks all call it."""

from llmdit_cli.engine.engine import Engine, Reporter
from llmdit_cli.engine.requests import (
    ChatRequest,
    DecodeRequest,
    Decomposed,
    DecomposeRequest,
    EditLayerRequest,
    EncodeRequest,
    Generated,
    GenerateRequest,
    LayersDecodeRequest,
    RewriteRequest,
)

__all__ = [
    "ChatRequest",
    "DecodeRequest",
    "Decomposed",
    "DecomposeRequest",
    "EditLayerRequest",
    "EncodeRequest",
    "Engine",
    "GenerateRequest",
    "Generated",
    "LayersDecodeRequest",
    "Reporter",
    "RewriteRequest",
]
