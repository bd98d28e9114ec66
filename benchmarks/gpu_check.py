"""Exercise the GPU-only paths of `generate` on the demo model and print one line per check.

    python benchmarks/gpu_check.py [--device cuda] [--out gpu_check_out] [--only PREFIX ...]

Each check runs `python -m llmdit_cli generate` in its own process (so a crash or a stuck kernel in
one does not hide the others) and reports: ok / failed, seconds, and the PSNR of its image against
the plain run on the same device. Optional packages (flash-attn, sageattention, xformers,
bitsandbytes, gguf) that are not installed show up as the one-line error llmdit gives, which is a
result too. Run on a CPU machine, the CUDA-only checks must fail with a clear message.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
PROMPT = "a red circle on a blue background"


def checks(gguf_file: str, st_file: str) -> list[tuple[str, list[str]]]:
    big = ["-W", "384", "-H", "320"]
    return [
        ("plain", []),
        *[
            (f"attention {b}", ["--attention-backend", b])
            for b in ("native", "sdpa", "flash", "flash_3", "sage", "xformers")
        ],
        ("compile", ["--compile"]),
        ("cpu-offload model", ["--cpu-offload", "model"]),
        ("cpu-offload sequential", ["--cpu-offload", "sequential"]),
        ("quantize 8bit", ["--quantize", "8bit"]),
        ("quantize 4bit", ["--quantize", "4bit"]),
        ("transformer-file safetensors", ["--transformer-file", st_file]),
        ("transformer-file gguf Q8_0", ["--transformer-file", gguf_file]),
        ("slg 2.5 layers 1,2", ["--slg-scale", "2.5", "--slg-layers", "1,2"]),
        ("plain 64x64 (2x base)", ["-W", "64", "-H", "64"]),
        ("dype at 2x", ["--dype", "-W", "64", "-H", "64"]),
        ("plain 384x320", big),
        ("vae-tiling 384x320", ["--vae-tiling", *big]),
        ("float16", ["--dtype", "float16"]),
    ]


def write_single_files(out: Path) -> tuple[str, str]:
    from helpers import original_zimage_keys, write_gguf
    from safetensors.torch import load_file, save_file

    from llmdit_cli.models import DEMO_PATH

    state = load_file(str(DEMO_PATH / "transformer" / "diffusion_pytorch_model.safetensors"))
    st = out / "dit.safetensors"
    save_file(original_zimage_keys(state), str(st))
    gg = out / "dit.gguf"
    try:
        write_gguf(original_zimage_keys({k: v.float() for k, v in state.items()}), gg)
    except ImportError:
        gg.write_bytes(b"")  # llmdit then reports the missing gguf package or a bad file
    return str(gg), str(st)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default="gpu_check_out")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PREFIX",
        help="run only the checks whose label starts with PREFIX (repeatable; 'plain' always runs)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from helpers import psnr

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    print(f"# gpu_check: --device {args.device}, {name}, torch {torch.__version__}")
    gguf_file, st_file = write_single_files(out)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    refs: dict[str, Path] = {}
    print("| check | result | seconds | PSNR vs plain (dB) |\n| --- | --- | --- | --- |")
    for label, extra in checks(gguf_file, st_file):
        if args.only and label != "plain" and not label.startswith(tuple(args.only)):
            continue
        png = out / (label.replace(" ", "_").replace(",", "") + ".png")
        cmd = [
            sys.executable,
            "-m",
            "llmdit_cli",
            "generate",
            PROMPT,
            "--model",
            "demo",
            "--seed",
            "3",
            "--device",
            args.device,
            "-q",
            "-o",
            str(png),
            *extra,
        ]
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        seconds = time.perf_counter() - t
        if r.returncode != 0:
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            print(f"| {label} | failed: {lines[-1] if lines else r.returncode} | {seconds:.1f} | |")
            continue
        size_key = "big" if "-W" in extra and "384" in extra else ("2x" if "-W" in extra else "base")
        ref = refs.setdefault(size_key, png)
        quality = "" if ref == png else f"{psnr(ref, png):.1f}"
        print(f"| {label} | ok | {seconds:.1f} | {quality} |")


if __name__ == "__main__":
    main()
