"""Placement: dtype, devices per component, offload, and the checks that they fit this machine."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from llmdit_cli.errors import UsageError, setting
from llmdit_cli.models.optimise import check_attention_backend, check_compile


@dataclass
class Placement:
    """How components load and where they run: dtype, devices, offload, quantization, speed-ups."""

    dtype: str = "auto"
    device: str = "auto"
    text_encoder_device: str | None = None
    dit_device: str | None = None
    vae_device: str | None = None
    cpu_offload: str = "none"
    attention_backend: str = "auto"
    compile: bool = False
    vae_tiling: bool = False
    vae_tile_size: int | None = None
    vae_tile_overlap: float | None = None
    quantize: str = "none"
    transformer_file: str | None = None

    def base_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.base_device().startswith("cuda") else torch.float32
        return getattr(torch, self.dtype)

    def device_for(self, component: str) -> str:
        specific = {
            "text_encoder": self.text_encoder_device,
            "transformer": self.dit_device,
            "vae": self.vae_device,
        }.get(component)
        return specific or self.base_device()

    def validate(self) -> None:
        """Every device named must parse and exist on this machine; every option must be usable."""
        for name in ("device", "text_encoder_device", "dit_device", "vae_device"):
            value = getattr(self, name)
            if value not in (None, "auto"):
                check_device(value, setting(f"optimization.{name}"))
        self._validate_cuda_features()
        if self.attention_backend != "auto":
            check_attention_backend(
                self.attention_backend, self.device_for("transformer"), self.torch_dtype(), self.compile
            )
        if self.compile:
            check_compile(self.device_for("transformer"))
        if self.transformer_file:
            from llmdit_cli.models.loading import check_transformer_file

            check_transformer_file(self.transformer_file)

    def _validate_cuda_features(self) -> None:
        import torch

        cuda = torch.cuda.is_available() and not self.base_device().startswith(("cpu", "mps"))
        if self.cpu_offload != "none" and not cuda:
            raise UsageError(
                f"{setting('optimization.cpu_offload')} {self.cpu_offload}: needs a CUDA GPU (it moves "
                f"components between CPU and GPU); none is in use here, so leave it at none"
            )
        if self.quantize == "fp8":
            self._validate_float8()
        elif self.quantize != "none":
            flag = setting("optimization.quantize")
            if not cuda:
                raise UsageError(
                    f"{flag} {self.quantize}: bitsandbytes quantization needs a CUDA GPU; none is in use here"
                )
            if importlib.util.find_spec("bitsandbytes") is None:
                raise UsageError(f"{flag} {self.quantize}: needs bitsandbytes (pip install 'llmdit[quant]')")

    def _validate_float8(self) -> None:
        """float8 matmuls must run where the text encoder and the transformer run (tried once on a
        small layer on each device)."""
        import torch

        from llmdit_cli.models.float8 import float8_problem

        flag = setting("optimization.quantize")
        if self.transformer_file and self.transformer_file.lower().endswith(".gguf"):
            raise UsageError(
                f"{flag} fp8: {setting('optimization.transformer_file')} {self.transformer_file} is a GGUF "
                f"file, already quantized; leave one of them out"
            )
        # With CPU offload the layers are converted on the CPU, but they run on the GPU.
        for device in dict.fromkeys(self.device_for(c) for c in ("text_encoder", "transformer")):
            problem = float8_problem(device, self.torch_dtype())
            if problem:
                needs = (
                    "a newer PyTorch (row-wise float8 matmuls on the CPU)"
                    if str(device).startswith("cpu")
                    else "an NVIDIA GPU of compute capability 8.9 or newer"
                )
                raise UsageError(
                    f"{flag} fp8: float8 matmuls do not run on {device} with torch {torch.__version__} "
                    f"({problem}); they need {needs}"
                )


def check_device(value: str, name: str) -> None:
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise UsageError(f"{name} {value}: not a device (use cpu, cuda, cuda:N, mps or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(
            f"{name} {value}: no CUDA device is available here (torch {torch.__version__}); "
            f"use {setting('optimization.device')} cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"{name} {value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{name} {value}: MPS is not available here; use {setting('optimization.device')} cpu")
