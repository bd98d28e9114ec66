"""Issue 24's speed figures on the demo model, as ratios measured in one run (A B A B ..., medians).

    OMP_NUM_THREADS=1 python benchmarks/bench_speed.py [batch|cache|serve|png|png-large|png-encode|fp8 ...]
        [--rounds 5]
        [--serve-requests 96]

- batch: `llmdit generate --num-images 48` at 32 px, `--batch-size 1` / `--batch-size 8`, in
  marginal time: a run minus a one-image run of the same command (start-up and loading left out).
- cache: `--steps 30` at 64 px, 16 images, uncached / `--step-cache first-block` (the default
  threshold, and 0.05), in marginal time; PSNR of each cached image against its uncached one.
- serve: `llmdit serve --model demo` (32 px): images per second with 4 concurrent clients / with
  one, at the default `--max-batch 4` and at `--max-batch 1` (one at a time, as before); and one
  client's latency at `--max-batch 4` / `--max-batch 1` (a lone request must not wait).
- png: in-process, 4 images at 256 px (on a CPU the demo takes seconds an image there, most of a
  minute at 512 px): images made, then every PNG written (before) / each PNG written on the
  writer thread while the next image is made (`cli/generate._generate_and_write`); the per-image
  gain in seconds, beside what encoding one PNG takes.
- png-large: the same at 1024 px, where the PNG matters (an H200 makes such an image in ~1.4 s).
  Denoising 1024² on a CPU would take the demo many minutes an image, so each image is
  `img2img --strength 0 --vae-tiling --vae-tile-size 128` of a 1024² photo-like input (no
  denoising step: the VAE encodes it, ~30 s an image here; since 2026-12-04 strength 0 gives the
  input itself, so nothing is decoded), 2 images a round, which writes the same 1024² PNG with its
  settings.
- png-encode: one 1024² PNG with its settings, PIL's encoder / `llmdit_cli/pngwrite.py` (on every
  core, and on one), interleaved: time and bytes.
- fp8: what `--quantize fp8` costs in pixels and saves in memory (its speed needs a GPU with float8
  tensor cores: `gpu_full.py --roles ...,fp8`). The demo, 2 prompts x 8 seeds: PSNR against the
  float32 image of `--dtype bfloat16` (what a GPU runs, for scale), of `--quantize fp8`, and of
  both against bfloat16 alone; and the bytes of the full-size Z-Image DiT's and text encoder's weights in bf16
  and with float8 blocks (built on the meta device, nothing allocated).

Commands run as subprocesses (`python -m llmdit_cli`), so what is timed is what a user runs.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
PROMPT = "a red circle on a blue background"
ENV = {**os.environ}


def run_cli(*args: str) -> float:
    """Seconds one `llmdit` command takes, start-up included."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmdit_cli", *args], check=True, env=ENV, capture_output=True)
    return time.perf_counter() - start


def marginal_rounds(cases: dict[str, list[str]], one: dict[str, list[str]], rounds: int) -> dict[str, float]:
    """Per case, the median over rounds of (its run - its one-image run); cases interleave."""
    seen: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, args in cases.items():
            seen[name].append(run_cli(*args) - run_cli(*one[name]))
    return {name: statistics.median(v) for name, v in seen.items()}


def bench_batch(rounds: int, out: Path) -> dict:
    base = ["generate", PROMPT, "--model", "demo", "-W", "32", "-H", "32", "--seed", "1", "-q"]
    cases, one = {}, {}
    for size in (1, 8):
        flags = ["--batch-size", str(size)]
        cases[f"batch {size}"] = [*base, *flags, "--num-images", "48", "-o", str(out / f"b{size}" / "{index}.png")]
        one[f"batch {size}"] = [*base, *flags, "-o", str(out / f"one-{size}.png")]
    m = marginal_rounds(cases, one, rounds)
    return {"marginal_s": m, "ratio": m["batch 1"] / m["batch 8"], "images": 48}


def psnr(a: Path, b: Path) -> float:
    import numpy as np
    from PIL import Image

    x, y = (np.asarray(Image.open(p).convert("RGB")).astype(float) for p in (a, b))
    mse = ((x - y) ** 2).mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def bench_cache(rounds: int, out: Path) -> dict:
    base = ["generate", PROMPT, "--model", "demo", "-W", "64", "-H", "64", "--steps", "30", "--seed", "1", "-q"]
    variants = {
        "uncached": [],
        "cached (default threshold)": ["--step-cache", "first-block"],
        "cached 0.05": ["--step-cache", "first-block", "--step-cache-threshold", "0.05"],
    }
    cases, one = {}, {}
    for k, (name, flags) in enumerate(variants.items()):
        cases[name] = [*base, *flags, "--num-images", "16", "-o", str(out / f"c{k}" / "{index}.png")]
        one[name] = [*base, *flags, "-o", str(out / f"c{k}-one.png")]
    m = marginal_rounds(cases, one, rounds)
    result = {"marginal_s": m}
    for k, name in enumerate(variants):
        if k:
            values = [psnr(out / "c0" / f"{i}.png", out / f"c{k}" / f"{i}.png") for i in range(16)]
            result[name] = {
                "speed": m["uncached"] / m[name],
                "psnr_min": min(values),
                "psnr_median": statistics.median(values),
            }
    return result


def start_server(port: int, max_batch: int) -> subprocess.Popen:
    from bench_serve import start_server as serve_demo  # benchmarks/ is on the path when run

    return serve_demo(port, "--max-batch", str(max_batch), "--data-dir", tempfile.mkdtemp(prefix="bench-"))


def post(port: int, seed: int) -> None:
    body = {"prompt": f"{PROMPT} {seed}", "size": "32x32", "llmdit": {"seed": seed}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/v1/images/generations", json.dumps(body), {"Content-Type": "application/json"})
    reply = json.loads(conn.getresponse().read())
    base64.b64decode(reply["data"][0]["b64_json"])


def images_per_second(port: int, clients: int, requests: int) -> tuple[float, float]:
    """Images per second with `clients` threads sending `requests` in all, and the median latency."""
    latencies: list[float] = []

    def client(k: int) -> None:
        for i in range(requests // clients):
            t = time.perf_counter()
            post(port, 1000 * k + i)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return requests / (time.perf_counter() - start), statistics.median(latencies)


def bench_serve(rounds: int, requests: int = 24) -> dict:
    from socket import socket

    ports = {}
    procs = []
    for max_batch in (4, 1):
        with socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[max_batch] = s.getsockname()[1]
        procs.append(start_server(ports[max_batch], max_batch))
    try:
        for port in ports.values():
            images_per_second(port, 4, 8)  # warm: the model loads on the first request
        seen: dict[str, list[float]] = {}
        for _ in range(rounds):
            for max_batch, port in ports.items():
                for clients in (1, 4):
                    rate, latency = images_per_second(port, clients, requests)
                    seen.setdefault(f"max-batch {max_batch}, {clients} clients", []).append(rate)
                    seen.setdefault(f"max-batch {max_batch}, {clients} clients latency", []).append(latency)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    m = {k: statistics.median(v) for k, v in seen.items()}
    return {
        "images_per_s": m,
        "4 clients / 1 client, max-batch 4": m["max-batch 4, 4 clients"] / m["max-batch 4, 1 clients"],
        "4 clients / 1 client, max-batch 1": m["max-batch 1, 4 clients"] / m["max-batch 1, 1 clients"],
        "lone latency, max-batch 4 / max-batch 1": m["max-batch 4, 1 clients latency"]
        / m["max-batch 1, 1 clients latency"],
    }


def bench_png(rounds: int, out: Path, size: int = 256, images: int = 4, through_img2img: bool = False) -> dict:
    """The PNG's time on the critical path: written after each image (before) / on the writer
    thread (now), where the main thread only waits when the writer falls behind (time in `put`
    and in the final join). Also the wall time of both, though on a CPU an image takes seconds
    and the PNG milliseconds, so that ratio is within noise."""
    import torch

    from llmdit_cli import artifacts
    from llmdit_cli.cli.generate import _generate_and_write
    from llmdit_cli.cli.output import Output
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import Engine, GenerateRequest
    from llmdit_cli.pngmeta import png_bytes

    class Unseen(Output):
        def wrote(self, *args, **kwargs) -> None:  # the paths would flood stdout
            pass

    torch.set_num_threads(1)
    engine = Engine()
    quiet = Unseen(quiet=True)
    blocked: list[float] = []

    class Timed(artifacts.BackgroundWriter):
        def put(self, task) -> None:
            t = time.perf_counter()
            super().put(task)
            blocked.append(time.perf_counter() - t)

        def close(self) -> None:
            t = time.perf_counter()
            super().close()
            blocked.append(time.perf_counter() - t)

    init = _photo_like(size) if through_img2img else None

    def request():
        if init is not None:
            # VAE tiles of 128 px: the demo VAE's mid-block attention over a whole 1024² image
            # would need (512²)² scores.
            r = resolve_defaults({"model": "demo", "strength": 0.0, "vae_tiling": True, "vae_tile_size": 128})
            return GenerateRequest(r, seeds=list(range(images)), prompts=[PROMPT], mode="img2img", init=init)
        r = resolve_defaults({"model": "demo", "width": size, "height": size})
        return GenerateRequest(r, seeds=list(range(images)), prompts=[PROMPT])

    def before() -> float:
        on_path = 0.0
        for k, g in enumerate(engine.generate(request(), quiet)):
            t = time.perf_counter()
            artifacts.write_bytes_atomic(str(out / f"before-{k}.png"), png_bytes(g.image, g.settings))
            on_path += time.perf_counter() - t
        return on_path

    def overlapped() -> float:
        blocked.clear()
        original, artifacts.BackgroundWriter = artifacts.BackgroundWriter, Timed
        try:
            _generate_and_write(engine, request(), [str(out / f"after-{k}.png") for k in range(images)], quiet)
        finally:
            artifacts.BackgroundWriter = original
        return sum(blocked)

    engine.generate(request(), quiet)  # load
    wall: dict[str, list[float]] = {"before": [], "overlapped": []}
    on_path: dict[str, list[float]] = {"before": [], "overlapped": []}
    for _ in range(rounds):
        for name, fn in (("before", before), ("overlapped", overlapped)):
            t = time.perf_counter()
            on_path[name].append(fn() / images)
            wall[name].append(time.perf_counter() - t)
    w = {k: statistics.median(v) for k, v in wall.items()}
    p = {k: statistics.median(v) for k, v in on_path.items()}
    return {
        "size": size,
        "png_on_critical_path_s_per_image": p,
        "per_image_gain_s": p["before"] - p["overlapped"],
        "wall_s": w,
        "wall_ratio": w["before"] / w["overlapped"],
    }


def bench_png_encode(rounds: int, size: int = 1024) -> dict:
    """One PNG with its settings: PIL's encoder (one thread, as `png_bytes` used) / `pngwrite`
    (bands on every core), interleaved; medians, the ratio and both sizes. Also the run on one
    thread (the pool limited to one worker), the slowest case of `pngwrite`."""
    from llmdit_cli import pngwrite
    from llmdit_cli.pngmeta import pil_png_bytes

    image = _photo_like(size)
    texts = [("llmdit", json.dumps({"prompt": PROMPT, "seed": 0})), ("parameters", PROMPT)]

    def pil() -> bytes:
        return pil_png_bytes(image, texts)

    def ours() -> bytes:
        return pngwrite.encode_png(image, texts)

    def one_thread() -> bytes:
        with pngwrite.threads_limited(1):
            return ours()

    cases = {"pil": pil, "pngwrite": ours, "pngwrite_1_thread": one_thread}
    times: dict[str, list[float]] = {k: [] for k in cases}
    sizes = {k: len(fn()) for k, fn in cases.items()}  # also the warm-up
    for _ in range(rounds):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "size": size,
        "threads": pngwrite.workers(),
        "median_s": med,
        "speedup": med["pil"] / med["pngwrite"],
        "speedup_1_thread": med["pil"] / med["pngwrite_1_thread"],
        "bytes": sizes,
    }


FP8_PROMPTS = [PROMPT, "a red fox in the snow"]


def bench_fp8(out: Path, seeds: int = 8) -> dict:
    variants = {
        "float32": [],
        "bfloat16": ["--dtype", "bfloat16"],
        "fp8": ["--quantize", "fp8"],
        "fp8 bfloat16": ["--quantize", "fp8", "--dtype", "bfloat16"],
    }
    for k, flags in enumerate(variants.values()):
        for j, prompt in enumerate(FP8_PROMPTS):
            base = ["generate", prompt, "--model", "demo", "--seed", "1", "--num-images", str(seeds), "-q"]
            run_cli(*base, *flags, "-o", str(out / f"f{k}" / f"p{j}-{{index}}.png"))

    def psnrs(a: int, b: int) -> dict:
        found = {}
        for j, prompt in enumerate(FP8_PROMPTS):
            values = [psnr(out / f"f{a}" / f"p{j}-{i}.png", out / f"f{b}" / f"p{j}-{i}.png") for i in range(seeds)]
            found[prompt] = {"median": statistics.median(values), "min": min(values)}
        return found

    return {
        "psnr_db": {
            "bfloat16 vs float32": psnrs(0, 1),
            "fp8 vs float32": psnrs(0, 2),
            "fp8 bfloat16 vs bfloat16": psnrs(1, 3),
        },
        "full_size_gib": _full_size_gib(),
    }


def _full_size_gib() -> dict:
    """Weight GiB of the full-size Z-Image DiT and its Qwen3-4B text encoder, in bf16 and with
    their blocks in float8 (built on the meta device: nothing allocated)."""
    import torch
    from diffusers import ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from llmdit_cli.models.float8 import quantize_float8

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_full import full_spec

    def gib(model) -> float:  # parameters() yields a tied embedding once
        return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 2**30

    spec, found = full_spec(), {}
    torch.set_default_dtype(torch.bfloat16)  # built in bf16, as loaded for a GPU
    with torch.device("meta"):
        models = {
            "transformer": ZImageTransformer2DModel(**spec.transformer),
            "text_encoder": Qwen3ForCausalLM(Qwen3Config(**spec.text_encoder)),
        }
    torch.set_default_dtype(torch.float32)
    for name, model in models.items():
        bf16 = gib(model)
        found[name] = {"bfloat16": bf16, "layers in float8": quantize_float8(model), "fp8 blocks": gib(model)}
    return found


def _photo_like(size: int):
    """A deterministic image with smooth regions, edges and fine texture, as PNG-hard as a photo."""
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * xx + 2 * yy), np.cos(5 * yy - 3 * xx), np.sin(4 * (xx + yy))], axis=-1)
    pixels = (base * 80 + 128 + rng.normal(0, 12, (size, size, 3))).clip(0, 255).astype("uint8")
    return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(0.6))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", nargs="*", default=["batch", "cache", "serve", "png", "png-large", "png-encode", "fp8"])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--serve-requests", type=int, default=96, help="requests per serve measurement (clients x rounds of requests)"
    )
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    benches = {
        "batch": lambda: bench_batch(args.rounds, out),
        "cache": lambda: bench_cache(args.rounds, out),
        "serve": lambda: bench_serve(args.rounds, args.serve_requests),
        "png": lambda: bench_png(args.rounds, out),
        "png-large": lambda: bench_png(args.rounds, out, size=1024, images=2, through_img2img=True),
        "png-encode": lambda: bench_png_encode(max(args.rounds, 9)),
        "fp8": lambda: bench_fp8(out),
    }
    for name in args.what:
        result = benches[name]()
        print(json.dumps({name: result}, indent=2), flush=True)


if __name__ == "__main__":
    main()
