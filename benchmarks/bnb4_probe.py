"""Which bitsandbytes 4-bit (NF4) linear layers run on this CUDA device, and which fail.

    python benchmarks/bnb4_probe.py            (CUDA machine; CUDA_LAUNCH_BLOCKING=1 is set for the cases)

`--quantize 4bit` on the demo model failed on an H200 with CUBLAS_STATUS_INTERNAL_ERROR. The demo's
layers are narrow and odd-sized (64, 32, 128, 341 wide) where Z-Image's are 2,560-10,240, so this
tries Linear4bit over those shapes, compute dtypes and row counts, and prints one line per case.
A CUDA error can leave the process's context unusable, so the cases run in a child process that is
restarted after the case that broke it.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

SHAPES = [(128, 341), (341, 128), (128, 340), (128, 342), (128, 344), (64, 32), (3840, 10240)]
DTYPES = ["bfloat16", "float32"]
ROWS = [7, 300]  # 300: one image's tokens at once, the shape the demo's transformer runs
CASES = list(itertools.product(SHAPES, DTYPES, ROWS))


def run_cases(start: int) -> None:
    import bitsandbytes as bnb
    import torch

    for i in range(start, len(CASES)):
        (n_in, n_out), dtype_name, rows = CASES[i]
        dtype = getattr(torch, dtype_name)
        label = f"{n_in}->{n_out} {dtype_name} rows={rows}"
        try:
            torch.manual_seed(0)
            ref = torch.nn.Linear(n_in, n_out, bias=True, dtype=dtype)
            layer = bnb.nn.Linear4bit(n_in, n_out, bias=True, compute_dtype=dtype, quant_type="nf4")
            layer.load_state_dict(ref.state_dict())
            layer = layer.cuda()
            x = torch.randn(1, rows, n_in, dtype=dtype, device="cuda")
            with torch.no_grad():
                y = layer(x)
                want = ref.cuda()(x)
            torch.cuda.synchronize()
            rel = ((y.float() - want.float()).norm() / want.float().norm()).item()
            print(f"{i}\tok\t{label}\trelative error {rel:.3f}", flush=True)
        except Exception as exc:  # noqa: BLE001 - every failure is a result here
            print(f"{i}\tFAILED\t{label}\t{type(exc).__name__}: {str(exc).splitlines()[0][:200]}", flush=True)
            if "CUDA" in str(exc) or "CUBLAS" in str(exc):
                sys.exit(3)  # the context may be broken: the parent restarts after this case


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--from":
        run_cases(int(sys.argv[2]))
        return
    import bitsandbytes as bnb
    import torch

    if not torch.cuda.is_available():
        sys.exit("bnb4_probe: no CUDA device here")
    print(f"# bnb4_probe: bitsandbytes {bnb.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}),")
    print(f"# {torch.cuda.get_device_name(0)}, library {getattr(bnb.cextension, 'BNB_BACKEND', '?')}")
    lib = getattr(bnb.cextension, "lib", None)
    print(f"# native library: {getattr(lib, '_name', lib)}")
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    done = 0
    while done < len(CASES):
        proc = subprocess.run(
            [sys.executable, __file__, "--from", str(done)], capture_output=True, text=True, env=env, timeout=300
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.split("\t")[0].isdigit()]
        for ln in lines:
            print(ln.split("\t", 1)[1], flush=True)
        if lines:
            done = int(lines[-1].split("\t")[0]) + 1
        else:  # died before its first case: report and move past it
            print(f"FAILED\t{CASES[done]}\tchild exit {proc.returncode}: {proc.stderr.strip()[-300:]}", flush=True)
            done += 1


if __name__ == "__main__":
    main()
