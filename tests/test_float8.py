"""--quantize fp8: float8 weights and matmuls in the transformer's blocks (models/float8.py). The
CPU runs torch._scaled_mm too, so the whole path runs here on the demo; the GPU's speed is for
benchmarks/gpu_full.py (--roles ...,fp8)."""

import math

import pytest
import torch
from helpers import assert_one_line_error, make_lora, max_diff, psnr

from llmdit_cli.models.float8 import Float8Linear, float8_eligible, float8_problem, quantize_float8, rowwise_float8

PROMPT = "a red circle on a blue background"
# Row-wise float8 matmuls on the CPU are recent in PyTorch (the CI's 2.13 has them).
pytestmark = pytest.mark.skipif(
    float8_problem("cpu", torch.float32) is not None, reason=f"torch {torch.__version__}: no float8 matmul on CPU"
)


def gen(cli, out, *extra):
    return cli("generate", PROMPT, "--model", "demo", "--seed", 6, "-o", out, *extra)


def _linear(inp=64, out=48, bias=True):
    torch.manual_seed(0)
    return torch.nn.Linear(inp, out, bias=bias)


def test_the_layer_computes_the_product_of_its_float8_operands():
    """Exactly (to float32 rounding) the product of the dequantized input and weight, and within
    float8's rounding of the full-precision layer."""
    lin = _linear()
    f8 = Float8Linear.from_linear(lin)
    x = torch.randn(2, 5, 64) * 3
    got = f8(x)
    assert got.shape == (2, 5, 48) and got.dtype == torch.float32
    qx, sx = rowwise_float8(x.reshape(-1, 64))
    qw, sw = rowwise_float8(lin.weight.detach())
    exact = (qx.float() * sx) @ (qw.float() * sw).t() + lin.bias.detach()
    assert torch.allclose(got.reshape(-1, 48), exact, rtol=1e-5, atol=1e-5)
    want = lin(x).detach()
    err = ((got - want).norm() / want.norm()).item()
    assert 0 < err < 0.06  # float8 e4m3: a 3-bit mantissa on both operands


def test_rows_use_the_whole_float8_range_and_zero_rows_stay_zero():
    rows = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5], [1e-6, 0.0, 0.0], [1e-30, 0.0, 0.0]])
    q, scale = rowwise_float8(rows)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (4, 1)
    # below AMAX_FLOOR (1e-12) a row counts as zero: no division by zero, no NaN
    assert q.float().abs().amax(dim=1).tolist() == [0.0, 448.0, 448.0, 0.0]
    out = Float8Linear.from_linear(_linear(16, 16, bias=False))(torch.zeros(4, 16))
    assert torch.equal(out, torch.zeros(4, 16))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_no_row_overflows_float8_in_any_dtype(dtype):
    """The scaling factor is rounded to the rows' dtype; a factor rounded up must still land every
    row's largest value on 448, never past it (float8 e4m3 has no infinity: NaN)."""
    torch.manual_seed(1)
    rows = (torch.randn(4000, 64) * torch.logspace(-3, 3, 4000)[:, None]).to(dtype)
    q, scale = rowwise_float8(rows)
    # before the cast (which saturates in recent PyTorch, and gives NaN past 464 in older ones)
    scaled = (rows.float() / scale).abs().amax(dim=1)
    assert (scaled <= 450).all() and (scaled >= 446).all()
    assert (q.float().abs().amax(dim=1) == 448).all()
    back = q.float() * scale
    assert ((back - rows.float()).norm() / rows.float().norm()).item() < 0.05


def test_a_dtype_cast_of_the_model_leaves_the_float8_weight_and_scales_alone():
    f8 = Float8Linear.from_linear(_linear(bias=False))
    x = torch.randn(3, 64)
    before = f8(x)
    f8.to(torch.bfloat16)
    assert f8.weight.dtype == torch.uint8
    assert torch.equal(f8(x), before)  # float32 input: the same numbers as before the cast
    got = f8(x.bfloat16())
    assert got.dtype == torch.bfloat16
    assert ((got.float() - before).norm() / before.norm()).item() < 0.02


def test_the_device_probe_finds_wrong_results_and_keeps_the_random_state(monkeypatch):
    torch.manual_seed(5)
    want = torch.rand(3)
    torch.manual_seed(5)
    assert float8_problem("cpu", torch.float32) is None
    assert torch.equal(torch.rand(3), want)
    monkeypatch.setattr(Float8Linear, "forward", lambda self, x: torch.zeros(x.shape[0], self.out_features))
    assert float8_problem("cpu", torch.float32).startswith("wrong results")


def test_zimage_blocks_swap_attention_and_feed_forward_layers_only():
    from diffusers import ZImageTransformer2DModel

    from llmdit_cli.tiny import TRANSFORMER

    # dim 96: a feed-forward width of 256, a multiple of 16 (the demo's 341 is not)
    dit = ZImageTransformer2DModel(**{**TRANSFORMER, "dim": 96, "n_heads": 6, "n_kv_heads": 6}).eval()
    x = [torch.randn(16, 1, 4, 4)]
    cap = [torch.randn(7, TRANSFORMER["cap_feat_dim"])]
    t = torch.tensor([0.4])
    with torch.no_grad():
        want = dit(x, t, cap, return_dict=False)[0][0]
    eligible = {n for n, m in dit.named_modules() if isinstance(m, torch.nn.Linear)}
    swapped = quantize_float8(dit)
    now = {n for n, m in dit.named_modules() if isinstance(m, Float8Linear)}
    assert swapped == len(now) > 0
    assert all(n.split(".")[0] in ("layers", "noise_refiner", "context_refiner") for n in now)
    assert not any("adaLN" in n for n in now) and any(n.endswith("adaLN_modulation.0") for n in eligible - now)
    assert {n.rsplit(".", 1)[-1] for n in now} >= {"to_q", "to_k", "to_v", "0", "w1", "w2", "w3"}
    with torch.no_grad():
        got = dit(x, t, cap, return_dict=False)[0][0]
    assert 0 < ((got - want).norm() / want.norm()).item() < 0.1


def _tiny_fp8_dit():
    from diffusers import ZImageTransformer2DModel

    from llmdit_cli.tiny import TRANSFORMER

    torch.manual_seed(0)
    dit = ZImageTransformer2DModel(**{**TRANSFORMER, "dim": 96, "n_heads": 6, "n_kv_heads": 6}).eval()
    quantize_float8(dit)
    inputs = ([torch.randn(16, 1, 4, 4)], torch.tensor([0.4]), [torch.randn(7, TRANSFORMER["cap_feat_dim"])])
    return dit, inputs


def test_layers_reading_one_input_scale_it_once_with_the_same_result(monkeypatch):
    """q/k/v read one tensor, as do the feed-forward's w1/w3: 4 scalings a block, not 7."""
    import llmdit_cli.models.float8 as f8

    dit, inputs = _tiny_fp8_dit()
    calls = []
    real = f8.rowwise_float8
    monkeypatch.setattr(f8, "rowwise_float8", lambda rows: calls.append(rows.shape) or real(rows))
    with torch.no_grad():
        got = dit(*inputs, return_dict=False)[0][0]
    blocks = sum(1 for m in dit.modules() if type(m).__name__ == "ZImageTransformerBlock")
    assert len(calls) == 4 * blocks
    # each layer scaling its own copy of the input: the same numbers
    monkeypatch.setattr(f8, "_scaled_rows", lambda x, width: real(x.reshape(-1, width).contiguous()))
    with torch.no_grad():
        want = dit(*inputs, return_dict=False)[0][0]
    assert torch.equal(got, want)


def test_an_input_changed_in_place_is_scaled_again_and_a_freed_one_lets_go():
    import gc

    import llmdit_cli.models.float8 as f8

    layer = Float8Linear.from_linear(_linear())
    x = torch.randn(5, 64)
    first = layer(x)
    x.mul_(-3)
    assert torch.allclose(layer(x), layer(x.clone()))
    assert not torch.allclose(layer(x), first)
    with torch.inference_mode():  # inference tensors have no version counter: never reused
        y = torch.randn(5, 64)
        layer(y)
        y.mul_(2)
        assert torch.equal(layer(y), layer(y.clone()))
    z = torch.randn(5, 64)
    layer(z)
    assert f8._last.scaled is not None
    del z
    gc.collect()
    assert f8._last.scaled is None


def test_full_size_zimage_has_every_block_layer_in_float8():
    """On the meta device (no memory): 30 + 2 + 2 blocks x (q, k, v, out, w1, w2, w3)."""
    from diffusers import ZImageTransformer2DModel
    from helpers import demo_config

    full = dict(demo_config("transformer"), dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30, n_kv_heads=30)
    full.update(cap_feat_dim=2560, axes_dims=[32, 48, 48], axes_lens=[1536, 512, 512])
    with torch.device("meta"):
        dit = ZImageTransformer2DModel(**full)
    assert quantize_float8(dit) == 34 * 7


def test_qwen_image_keeps_its_modulation_layers():
    from diffusers import QwenImageTransformer2DModel

    from llmdit_cli.tiny import QWEN_TRANSFORMER

    torch.manual_seed(0)
    dit = QwenImageTransformer2DModel(**{**QWEN_TRANSFORMER, "attention_head_dim": 32, "axes_dims_rope": (8, 12, 12)})
    quantize_float8(dit)
    now = {n for n, m in dit.named_modules() if isinstance(m, Float8Linear)}
    kept = {n for n, m in dit.named_modules() if type(m) is torch.nn.Linear}
    assert {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_k_proj"} <= now
    assert {"transformer_blocks.0.img_mod.1", "transformer_blocks.0.txt_mod.1"} <= kept


@pytest.mark.parametrize(
    ("path", "inp", "out", "eligible"),
    [
        ("attention.to_q", 64, 64, True),
        ("attention.to_q.base_layer", 64, 64, True),
        ("attention.to_q.lora_A.lora_0", 64, 16, False),
        ("adaLN_modulation.0", 64, 256, False),
        ("img_mod.1", 64, 384, False),
        ("feed_forward.w1", 128, 341, False),  # the demo's odd width
        ("model.linear", 64, 64, True),
    ],
)
def test_which_layers_are_eligible(path, inp, out, eligible):
    assert float8_eligible(path, torch.nn.Linear(inp, out)) is eligible


def test_generate_fp8_is_close_recorded_and_repeatable(cli):
    assert gen(cli, "base.png").code == 0
    r = gen(cli, "f8.png", "--quantize", "fp8")
    assert r.code == 0, r.stderr
    # 4 + 1 + 1 blocks x q, k, v, out (the 341-wide feed-forward stays); 2 decoder layers x 7
    assert "fp8: Linear layers in float8: 14 in the text encoder, 24 in the transformer" in r.stderr
    assert 25 < psnr("base.png", "f8.png") < math.inf
    from llmdit_cli.pngmeta import settings_of

    assert settings_of(open("f8.png", "rb").read(), "f8.png")["quantize"] == "fp8"
    # Recorded as the machine's own option (like dtype): --from-png repeats it when asked to.
    r = cli("generate", "--from-png", "f8.png", "--quantize", "fp8", "-o", "again.png")
    assert r.code == 0, r.stderr
    assert max_diff("f8.png", "again.png") == 0
    assert cli("generate", "--from-png", "f8.png", "-o", "plain.png").code == 0
    assert max_diff("base.png", "plain.png") == 0


def test_a_lora_still_acts_on_float8_layers(cli, tmp_path):
    from llmdit_cli.models import DEMO_PATH, ModelHandle, Placement

    make_lora(DEMO_PATH, tmp_path / "l.safetensors")
    handle = ModelHandle("demo", Placement(quantize="fp8"), loras=[str(tmp_path / "l.safetensors")])
    q = handle.pipeline("transformer").transformer.layers[0].attention.to_q
    assert isinstance(q.base_layer, Float8Linear)
    assert gen(cli, "plain.png", "--quantize", "fp8").code == 0
    r = gen(cli, "lora.png", "--quantize", "fp8", "--lora", tmp_path / "l.safetensors")
    assert r.code == 0, r.stderr
    assert max_diff("plain.png", "lora.png") > 10


def test_a_dora_lora_is_refused_with_fp8(cli, tmp_path):
    from diffusers import ZImagePipeline
    from helpers import random_lora_model
    from peft.utils import get_peft_model_state_dict

    from llmdit_cli.models import DEMO_PATH

    dit = random_lora_model(DEMO_PATH, r=4, lora_alpha=4, target_modules=["to_q"], use_dora=True)
    ZImagePipeline.save_lora_weights(
        str(tmp_path), transformer_lora_layers=get_peft_model_state_dict(dit), weight_name="d.safetensors"
    )
    assert gen(cli, "ok.png", "--lora", tmp_path / "d.safetensors").code == 0
    r = gen(cli, "o.png", "--quantize", "fp8", "--lora", tmp_path / "d.safetensors")
    assert_one_line_error(r, "--quantize fp8", "d.safetensors", "DoRA")


def test_the_text_encoder_runs_in_float8_too(cli):
    """encode --quantize fp8: the text encoder's decoder layers in float8, the embeddings close to
    and not equal to the unquantized ones, and cached apart from them."""
    from llmdit_cli.models import ModelHandle, Placement
    from llmdit_cli.workflows import read_embeds

    te = ModelHandle("demo", Placement(quantize="fp8")).pipeline("tokenizer", "text_encoder").text_encoder
    f8 = {n for n, m in te.named_modules() if isinstance(m, Float8Linear)}
    assert len(f8) == 2 * 7 and all(n.startswith("model.layers.") for n in f8)  # q k v o gate up down
    assert type(te.lm_head) is torch.nn.Linear
    for name, extra in (("plain", []), ("f8", ["--quantize", "fp8"]), ("again", ["--quantize", "fp8"])):
        r = cli("encode", PROMPT, "--model", "demo", "-o", f"{name}.safetensors", *extra)
        assert r.code == 0, r.stderr
    (plain,), (f8,), (again,) = (read_embeds(f"{n}.safetensors").cond for n in ("plain", "f8", "again"))
    assert torch.equal(f8, again) and not torch.equal(f8, plain)
    assert ((f8 - plain).norm() / plain.norm()).item() < 0.1


def test_a_device_without_float8_matmuls_is_one_line(cli, monkeypatch):
    monkeypatch.setattr("llmdit_cli.models.float8.float8_problem", lambda *_: "no kernel here")
    assert_one_line_error(
        gen(cli, "o.png", "--quantize", "fp8"), "--quantize fp8", "do not run on cpu", "no kernel here", "newer PyTorch"
    )
    from llmdit_cli.errors import UsageError
    from llmdit_cli.models import Placement

    monkeypatch.setattr(Placement, "device_for", lambda self, component: "cuda:0")
    with pytest.raises(UsageError, match="do not run on cuda:0 .*compute capability 8.9 or newer"):
        Placement(quantize="fp8")._validate_float8()


def test_fp8_over_a_gguf_transformer_is_one_line(cli):
    open("dit.gguf", "wb").write(b"GGUF")
    assert_one_line_error(
        gen(cli, "o.png", "--quantize", "fp8", "--transformer-file", "dit.gguf"),
        "--transformer-file",
        "already quantized",
    )
