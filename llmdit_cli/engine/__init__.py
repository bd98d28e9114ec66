"""The one generation API: an `Engine` holds the models a process has loaded and serves typed
requests (encode, generate / img2img, decode). Commands, the trainer's validation, the evaluator
and the benchmarks all call it; `sweep` and `serve` will too."""

from llmdit_cli.engine.engine import Engine, Reporter
from llmdit_cli.engine.requests import DecodeRequest, EncodeRequest, Generated, GenerateRequest, RewriteRequest

__all__ = ["DecodeRequest", "EncodeRequest", "Engine", "GenerateRequest", "Generated", "Reporter", "RewriteRequest"]
