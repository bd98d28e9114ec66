"""--attention-backend, --compile, --cpu-offload, --vae-tiling, --quantize, --transformer-file:
what runs on a CPU runs here on the demo; what needs CUDA says so in one line."""

import json

import pytest
from helpers import assert_one_line_error, max_diff, original_zimage_keys, psnr, write_gguf

PROMPT = "a red circle on a blue background"


def gen(cli, out, *extra):
    return cli("generate", PROMPT, "--model", "demo", "--seed", 6, "-o", out, *extra)


@pytest.fixture
def baseline(cli):
    assert gen(cli, "base.png").code == 0
    return "base.png"


@pytest.mark.parametrize("backend", ["native", "sdpa"])
def test_cpu_attention_backends_match_the_default(cli, baseline, backend):
    r = gen(cli, "o.png", "--attention-backend", backend)
    assert r.code == 0, r.stderr
    assert max_diff(baseline, "o.png") <= 1


@pytest.mark.parametrize("backend", ["flash", "flash_3", "sage", "xformers"])
def test_gpu_attention_backends_say_what_is_usable(cli, backend):
    r = gen(cli, "o.png", "--attention-backend", backend)
    assert_one_line_error(r, f"--attention-backend {backend}", "usable here: auto, native, sdpa")


def test_unknown_attention_backend(cli):
    assert_one_line_error(gen(cli, "o.png", "--attention-backend", "fast"), "--attention-backend")


def test_compile_works_on_cpu_or_says_why_not(cli, baseline):
    import os
    import shutil

    r = gen(cli, "c.png", "--compile")
    if not shutil.which(os.environ.get("CXX", "g++")):
        assert_one_line_error(r, "--compile", "C++ compiler")
        return
    assert r.code == 0, r.stderr
    assert max_diff(baseline, "c.png") <= 1


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--cpu-offload", "model"], "needs a CUDA GPU"),
        (["--cpu-offload", "sequential"], "needs a CUDA GPU"),
        (["--cpu-offload", "lots"], "--cpu-offload"),
        (["--quantize", "8bit"], "needs a CUDA GPU"),
        (["--quantize", "4bit"], "needs a CUDA GPU"),
        (["--quantize", "2bit"], "--quantize"),
        (["--transformer-file", "missing.gguf"], "no such file"),
    ],
)
@pytest.mark.parametrize("cmd", ["generate", "img2img"])
def test_what_cannot_run_here_is_one_line(cli, cmd, args, needle):
    if cmd == "img2img":
        from PIL import Image

        Image.new("RGB", (32, 32), (200, 30, 30)).save("in.png")
        r = cli(cmd, PROMPT, "--model", "demo", "--image", "in.png", "-o", "o.png", *args)
    else:
        r = gen(cli, "o.png", *args)
    assert_one_line_error(r, needle)
    assert not __import__("os").path.exists("o.png")


def _demo_transformer_state():
    from safetensors.torch import load_file

    from llmdit_cli.models import DEMO_PATH

    return load_file(str(DEMO_PATH / "transformer" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize("style", ["diffusers", "original"])
def test_single_file_transformer_gives_the_same_image(cli, baseline, style):
    from safetensors.torch import save_file

    state = _demo_transformer_state()
    save_file(original_zimage_keys(state) if style == "original" else state, "dit.safetensors")
    r = gen(cli, "f.png", "--transformer-file", "dit.safetensors")
    assert r.code == 0, r.stderr
    assert max_diff(baseline, "f.png") == 0


def _comfy_float8(path, per_row=False, uint8=False, formats=None, legacy=True, fmt="float8_e4m3fn", header=True):
    """The demo transformer as a ComfyUI float8 file with scales: the older "scaled fp8" layout
    (`scaled_fp8` marker, `X.scale_weight`, `X.scale_input`) or the newer one (`X.weight_scale`,
    `X.input_scale`, each layer's format in the header's `_quantization_metadata` or, without
    `header`, in `X.comfy_quant` JSON tensors; float8 bytes in a uint8 container with `uint8`).
    Returns the path and the tensors written, for tests that spoil one."""
    import torch
    from safetensors.torch import save_file

    dtype, top = getattr(torch, fmt), torch.finfo(getattr(torch, fmt)).max
    state, out, layers = original_zimage_keys({k: v.float() for k, v in _demo_transformer_state().items()}), {}, {}
    for key, value in state.items():
        if value.ndim != 2 or not key.endswith(".weight") or "embedder" in key:
            out[key] = value
            continue
        scale = value.abs().amax(dim=1 if per_row else None) / top
        q = (value / (scale[:, None] if per_row else scale)).to(dtype)
        name = key[: -len(".weight")]
        out[key] = q.view(torch.uint8) if uint8 else q
        out[f"{name}.scale_weight" if legacy else f"{key}_scale"] = scale.reshape(-1) if per_row else scale.reshape(())
        out[f"{name}.scale_input" if legacy else f"{name}.input_scale"] = torch.tensor(1.0)
        layers[name] = {"format": (formats or {}).get(name, fmt)}
        if not (legacy or header):
            out[f"{name}.comfy_quant"] = torch.tensor(list(json.dumps(layers[name]).encode()), dtype=torch.uint8)
    if legacy:
        out["scaled_fp8"] = torch.zeros(2, dtype=torch.float8_e4m3fn)
    described = not legacy and header
    meta = {"_quantization_metadata": json.dumps({"format_version": "1.0", "layers": layers})} if described else {}
    save_file(out, path, metadata=meta)
    return path, out


@pytest.mark.parametrize(
    ("layout", "floor"),
    [
        ({}, 35),
        ({"per_row": True}, 35),
        ({"legacy": False, "uint8": True}, 35),
        ({"legacy": False, "per_row": True}, 35),
        ({"legacy": False, "uint8": True, "header": False, "fmt": "float8_e5m2"}, 30),  # 2-bit mantissa
    ],
    ids=["scaled_fp8", "scaled_fp8-per-row", "metadata-uint8", "metadata-per-row", "comfy_quant-e5m2-uint8"],
)
def test_comfyui_float8_files_load_with_their_scales(cli, baseline, layout, floor):
    """Read without their scales these make noise (PSNR ~7 dB on the demo); dequantized, float8 close."""
    path, _ = _comfy_float8("dit.safetensors", **layout)
    r = gen(cli, "c.png", "--transformer-file", path)
    assert r.code == 0, r.stderr
    assert floor < psnr(baseline, "c.png") < float("inf")


def _spoiled(change):
    """A newer-layout ComfyUI file with `change(tensors, metadata)` applied before saving."""
    from safetensors.torch import save_file

    _, tensors = _comfy_float8("dit.safetensors", legacy=False)
    meta = {"_quantization_metadata": json.dumps({"layers": {}})}
    change(tensors, meta)
    save_file(tensors, "dit.safetensors", metadata=meta)
    return "dit.safetensors"


def _one_scale_of_shape_3(tensors, meta):
    import torch

    key = next(k for k in tensors if k.endswith(".weight_scale"))
    tensors[key] = torch.ones(3)


def _second_scales(tensors, meta):
    key = next(k for k in tensors if k.endswith(".weight_scale"))
    tensors[key + "_2"] = tensors[key].clone()


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (
            lambda t, m: m.update(_quantization_metadata='{"layers": {"a": {"format": "int8_blockwise"}}}'),
            "int8_blockwise",
        ),
        (lambda t, m: m.update(_quantization_metadata='{"layers": [1, 2]}'), "unreadable quantization metadata"),
        (_one_scale_of_shape_3, "not one scale per tensor or per row"),
        (_second_scales, "two scales per weight"),
    ],
    ids=["blockwise", "malformed-metadata", "scale-shape", "double-scaled"],
)
def test_comfyui_files_this_cannot_read_are_one_line(cli, change, needle):
    path = _spoiled(change)
    assert_one_line_error(gen(cli, "o.png", "--transformer-file", path), "--transformer-file", needle)


def test_gguf_transformer_loads_and_stays_close(cli, baseline):
    write_gguf(original_zimage_keys({k: v.float() for k, v in _demo_transformer_state().items()}), "dit.gguf")
    r = gen(cli, "g.png", "--transformer-file", "dit.gguf")
    assert r.code == 0, r.stderr
    assert 0 < max_diff(baseline, "g.png") and psnr(baseline, "g.png") > 40  # Q8_0: close, not equal


def test_transformer_file_of_another_model_is_one_line(cli, tiny_model):
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(tiny_model / "transformer" / "diffusion_pytorch_model.safetensors")), "other.safetensors")
    assert_one_line_error(gen(cli, "o.png", "--transformer-file", "other.safetensors"), "--transformer-file")
    open("t.bin", "wb").write(b"x")
    assert_one_line_error(gen(cli, "o.png", "--transformer-file", "t.bin"), ".gguf or .safetensors")


def test_vae_tiling_decodes_in_tiles_close_to_whole(cli):
    """diffusers' own tiling: several decoder calls, and within 30 dB PSNR of the untiled decode."""
    from helpers import as_array
    from safetensors.torch import load_file

    from llmdit_cli.families.zimage.vae import decode_latents
    from llmdit_cli.models import ModelHandle, Placement

    r = cli(
        "generate",
        PROMPT,
        "--model",
        "demo",
        "--seed",
        2,
        "-W",
        384,
        "-H",
        320,
        "--save-latents",
        "l.safetensors",
        "-o",
        "whole.png",
    )
    assert r.code == 0, r.stderr
    pipe = ModelHandle("demo", Placement(vae_tiling=True)).pipeline("vae")
    calls = []
    pipe.vae.decoder.register_forward_pre_hook(lambda m, a: calls.append(tuple(a[0].shape[-2:])))
    tiled = as_array(decode_latents(pipe, load_file("l.safetensors")["latents"])[0])
    assert len(calls) > 1 and all(h < 160 or w < 192 for h, w in calls)
    assert psnr("whole.png", tiled) >= 30 and max_diff("whole.png", tiled) > 0

    r = cli("decode", "l.safetensors", "--model", "demo", "--vae-tiling", "-o", "tiled.png")
    assert r.code == 0, r.stderr
    assert max_diff("tiled.png", tiled) == 0


def test_settings_record_the_speed_and_memory_choices(cli):
    from llmdit_cli.pngmeta import settings_of

    assert (
        gen(
            cli,
            "o.png",
            "--attention-backend",
            "sdpa",
            "--vae-tiling",
            "--dype",
            "--slg-scale",
            1.5,
            "--slg-layers",
            "2",
            "--save-latents",
            "o.latents.safetensors",
        ).code
        == 0
    )
    s = settings_of(open("o.png", "rb").read(), "o.png")
    keys = (
        "attention_backend",
        "vae_tiling",
        "compile",
        "cpu_offload",
        "quantize",
        "transformer_file",
        "dype",
        "dype_method",
        "dype_base_resolution",
        "slg_scale",
        "slg_layers",
    )
    expected = ("sdpa", True, False, "none", "none", None, True, "yarn", 32, 1.5, [2])  # the demo family's DyPE method
    assert tuple(s[k] for k in keys) == expected
    r = cli("inspect", "o.latents.safetensors", "--json")
    assert r.code == 0, r.stderr
    assert tuple(json.loads(r.stdout)["params"]["images"][0][k] for k in keys) == expected


def test_4bit_leaves_out_the_layers_bitsandbytes_mishandles():
    """bitsandbytes 0.50's 4-bit GEMM crashed on a CUDA GPU for the demo's 341-wide feed-forward
    (benchmarks/README.md): such layers are listed to stay unquantized, Z-Image's full size has none."""
    import torch
    from diffusers import ZImageTransformer2DModel

    from llmdit_cli.models import DEMO_PATH
    from llmdit_cli.models.optimise import BNB4_WIDTH_MULTIPLE, bnb4_unsafe_linears

    demo = json.loads((DEMO_PATH / "transformer" / "config.json").read_text())
    skipped = bnb4_unsafe_linears(ZImageTransformer2DModel, demo)
    model = ZImageTransformer2DModel.from_config(demo)
    odd = {
        n
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and (m.in_features % BNB4_WIDTH_MULTIPLE or m.out_features % BNB4_WIDTH_MULTIPLE)
    }
    assert set(skipped) == odd and any(n.endswith("feed_forward.w1") for n in skipped)
    full = dict(demo, dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30, n_kv_heads=30, cap_feat_dim=2560)
    full.update(axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512])
    assert bnb4_unsafe_linears(ZImageTransformer2DModel, full) == []


def test_vae_tile_size_and_overlap_reach_the_vae(cli):
    from llmdit_cli.models import ModelHandle, Placement

    handle = ModelHandle("demo", Placement(vae_tiling=True, vae_tile_size=512, vae_tile_overlap=0.1))
    vae, f = handle.pipeline("vae").vae, handle.limits().vae_scale_factor
    assert (vae.tile_sample_min_size, vae.tile_latent_min_size, vae.tile_overlap_factor) == (512, 512 // f, 0.1)
    r = cli("generate", PROMPT, "--model", "demo", "--vae-tiling", "--vae-tile-size", 256, "--vae-tile-overlap",
            0.125, "--steps", 2, "-o", "t.png")  # fmt: skip
    assert r.code == 0, r.stderr
    r = cli("generate", PROMPT, "--model", "demo", "--vae-tile-size", 256, "--steps", 1, "-o", "u.png")
    assert r.code == 0 and "--vae-tile-overlap shape the tiles of --vae-tiling; without it" in " ".join(
        r.stderr.split()
    )
    r = cli("generate", PROMPT, "--model", "demo", "--vae-tile-overlap", 0.9, "-o", "x.png")
    assert r.code != 0 and "--vae-tile-overlap 0.9: must be less than or equal to 0.5" in r.stderr


def test_attention_auto_takes_the_first_usable_backend_by_priority(monkeypatch):
    from llmdit_cli.errors import render
    from llmdit_cli.models import optimise

    usable = {"sage", "xformers"}
    monkeypatch.setattr(
        optimise, "attention_backend_problem", lambda name, *_: None if name in usable else f"{name} broke"
    )
    assert optimise.auto_attention_backend("cuda")[0] == "sage"  # before xformers
    usable.add("flash")
    assert optimise.auto_attention_backend("cuda") == ("flash", {"flash_3": "flash_3 broke"})
    usable.clear()
    assert optimise.auto_attention_backend("cuda")[0] is None  # diffusers' default (SDPA)

    class Transformer:
        backend = None

        def set_attention_backend(self, name):
            self.backend = name

    t = Transformer()
    usable.add("flash")
    line = optimise.set_attention_backend(t, "auto", "cuda:0")  # what the run's log says, once
    assert t.backend == "flash_varlen"
    assert render(line) == "flash (optimization.attention_backend auto; flash_3: flash_3 broke)"
    usable.clear()
    monkeypatch.setattr(optimise, "attention_backend_problem", lambda name, *_: f"{name} is not installed (or too old)")
    line = optimise.set_attention_backend(t, "auto", "cuda:0")  # the missing ones in one clause
    assert render(line) == "sdpa (optimization.attention_backend auto; not installed: flash_3, flash, sage, xformers)"
    monkeypatch.undo()
    assert optimise.auto_attention_backend("cpu")[0] is None  # every faster backend needs CUDA
    t = Transformer()
    assert optimise.set_attention_backend(t, "auto", "cpu") is None and t.backend is None  # as stock
    assert optimise.set_attention_backend(t, "native", "cpu") is None and t.backend == "_native_math"


def test_the_attention_probe_runs_a_backend_and_says_why_it_cannot_be_used():
    import torch

    from llmdit_cli.models import optimise

    try:
        assert optimise.attention_backend_problem("sdpa", "cpu", torch.float32) is None
        assert optimise.attention_backend_problem("native", "cpu", torch.bfloat16) is None
        # The compiled probe runs (llmdit skips it for PyTorch's own backends; a GPU kernel takes it).
        assert optimise._probe_problem("native", "cpu", "float32", True) is None
        # flash-attn is not installed here: run anyway (past the CUDA check), its call fails in the probe.
        problem = optimise._probe_problem("flash", "cpu", "float32", False)
        assert problem.startswith("fails in float32 on cpu (") and "Error" not in problem
        problem = optimise._probe_problem("flash", "cpu", "float32", True)
        assert problem.startswith("fails under torch.compile on cpu (")
    finally:
        optimise._probe_problem.cache_clear()


def test_the_attention_probe_catches_a_kernel_that_gives_wrong_results(monkeypatch):
    import torch

    from llmdit_cli.models import optimise

    real = optimise._probe_attention
    monkeypatch.setattr(optimise, "_probe_attention", lambda *a: (real(*a)[0] + 0.5, real(*a)[1]))
    optimise._probe_problem.cache_clear()
    try:
        problem = optimise.attention_backend_problem("sdpa", "cpu", torch.float32)
    finally:
        optimise._probe_problem.cache_clear()
    assert problem == "gives wrong results on cpu (off by 0.5 from PyTorch's attention)"


def test_a_backend_that_fails_under_compile_is_refused_in_one_line(monkeypatch):
    import torch

    from llmdit_cli.errors import UsageError
    from llmdit_cli.models import optimise

    # Past the CUDA check on a CPU are only PyTorch's own backends, which compile; so native is
    # probed under compile here as a GPU backend would be, and its probe made to fail.
    monkeypatch.setattr(optimise, "_PLAIN_TORCH", {"sdpa"})
    monkeypatch.setattr(optimise, "_probe_problem", lambda *a: "fails under torch.compile on cpu (x)" if a[3] else None)
    with pytest.raises(UsageError) as err:
        optimise.check_attention_backend("native", "cpu", torch.float32, compile=True)
    assert err.value.render() == (
        "optimization.attention_backend native with optimization.compile: fails under torch.compile on cpu (x); "
        "usable here: auto, sdpa"
    )
