import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def demo_config(component: str) -> dict:
    import json

    from llmdit_cli.models import DEMO_PATH

    return json.loads((DEMO_PATH / component / "config.json").read_text())


def max_diff(a, b) -> int:
    a = pixels(a) if not isinstance(a, np.ndarray) else a
    b = pixels(b) if not isinstance(b, np.ndarray) else b
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a - b).max())


def as_array(img) -> np.ndarray:
    return np.asarray(img.convert("RGB")).astype(np.int16)


def make_lora(model_folder, path, style="diffusers", rank=4, seed=0, targets=("to_q", "to_k", "to_v")):
    """Write a random LoRA for the folder's transformer in the diffusers/PEFT or Kohya key style."""
    import torch
    from diffusers import ZImagePipeline
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    dit = random_lora_model(model_folder, seed, r=rank, lora_alpha=rank, target_modules=list(targets))
    state = get_peft_model_state_dict(dit)
    if style == "diffusers":
        ZImagePipeline.save_lora_weights(
            str(path.parent), transformer_lora_layers=state, weight_name=path.name, safe_serialization=True
        )
        return path
    kohya = {}
    for key, value in state.items():
        base = "diffusion_model." + key.replace(".lora_A.weight", ".lora_down.weight").replace(
            ".lora_B.weight", ".lora_up.weight"
        )
        kohya[base] = value.contiguous()
        if key.endswith("lora_A.weight"):
            kohya[base.replace(".lora_down.weight", ".alpha")] = torch.tensor(float(rank))
    save_file(kohya, str(path))
    return path


def random_lora_model(model_folder, seed=0, **lora_config):
    """The folder's transformer with a PEFT LoRA of random (not zero) weights."""
    import torch
    from diffusers import ZImageTransformer2DModel
    from peft import LoraConfig

    dit = ZImageTransformer2DModel.from_pretrained(model_folder, subfolder="transformer", local_files_only=True)
    dit.add_adapter(LoraConfig(init_lora_weights=False, **lora_config))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return dit


def assert_one_line_error(r, *needles):
    """A failed command: non-zero exit, exactly one `llmdit: error:` line, no traceback."""
    assert r.code not in (0, None), r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("llmdit: error:")]
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def original_zimage_keys(state: dict) -> dict:
    """A diffusers Z-Image transformer state dict in the original checkpoint's key style
    (fused qkv, `final_layer.`, `x_embedder.`, `attention.out`, `q_norm`/`k_norm`)."""
    import torch

    out = {}
    for key, value in state.items():
        if ".attention.to_k.weight" in key or ".attention.to_v.weight" in key:
            continue
        if ".attention.to_q.weight" in key:
            stem = key.replace(".attention.to_q.weight", "")
            out[stem + ".attention.qkv.weight"] = torch.cat([state[f"{stem}.attention.to_{x}.weight"] for x in "qkv"])
            continue
        for ours, theirs in (
            ("all_final_layer.2-1.", "final_layer."),
            ("all_x_embedder.2-1.", "x_embedder."),
            (".attention.to_out.0.", ".attention.out."),
            (".attention.norm_k.", ".attention.k_norm."),
            (".attention.norm_q.", ".attention.q_norm."),
        ):
            key = key.replace(ours, theirs)
        out[key] = value.contiguous()
    return out


def write_gguf(state: dict, path) -> None:
    """A GGUF file with the Linear weights as Q8_0 and everything else as F32."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "zimage")
    for key, value in state.items():
        array = value.float().numpy()
        if key.endswith(".weight") and array.ndim == 2 and array.shape[-1] % 32 == 0 and "pad_token" not in key:
            q = gguf.quants.quantize(array, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(key, q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(key, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def psnr(a, b) -> float:
    a = pixels(a) if not isinstance(a, np.ndarray) else a
    b = pixels(b) if not isinstance(b, np.ndarray) else b
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def chromium():
    """Headless Chromium through selenium (Debian's chromium and chromium-driver; .ci/run installs them)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors, for the tests to read
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    assert binary and driver_path, "install chromium and chromium-driver (.ci/run does)"
    options.binary_location = binary
    return webdriver.Chrome(options=options, service=Service(driver_path))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str, token: str | None = None):
        self.port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        if "--data-dir" not in args:  # never the user's own history
            env.setdefault("LLMDIT_DATA_DIR", tempfile.mkdtemp(prefix="llmdit-data-"))
        if token:
            env["LLMDIT_TEST_TOKEN"] = token
            args = (*args, "--token-env", "LLMDIT_TEST_TOKEN")
        self.token = token
        cmd = [sys.executable, "-m", "llmdit_cli", "serve", "--port", str(self.port), *args]
        self.log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"llmdit-serve-{self.port}.log", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(240):  # bounded: 120 s for the model to load on a busy 2-core machine
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.output()}")
            try:
                if self.request("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise AssertionError(f"server did not start: {self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()[-3000:]

    def request(self, method, path, body=None, headers=None, auth=True, raw=None, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if auth and self.token:
            h["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, data, h)
            resp = conn.getresponse()
            return resp.status, resp.read(), dict(resp.getheaders())
        finally:
            conn.close()

    def json(self, method, path, body=None, **kw):
        status, data, _ = self.request(method, path, body, **kw)
        return status, json.loads(data)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
