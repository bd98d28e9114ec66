"""Skip-layer guidance and DyPE: on the shipped demo through the CLI, and on tiny random
transformers through the stage functions, against independent re-derivations."""

from contextlib import ExitStack

import pytest
import torch
from helpers import assert_one_line_error, max_diff, pixels

PROMPT = "a red circle on a blue background"


def gen(cli, out, *extra):
    r = cli("generate", PROMPT, "--model", "demo", "--seed", 4, "-o", out, *extra)
    assert r.code == 0, r.stderr
    return r


# --- SLG -----------------------------------------------------------------------------------------


def test_slg_scale_zero_is_the_baseline_and_positive_changes(cli):
    gen(cli, "base.png")
    gen(cli, "zero.png", "--slg-scale", 0, "--slg-layers", "0,1")
    gen(cli, "on.png", "--slg-scale", 2.5, "--slg-layers", "0,1")
    assert max_diff("base.png", "zero.png") == 0
    assert max_diff("base.png", "on.png") > 10


def test_slg_bad_layer_is_one_line_naming_the_layer_count(cli):
    r = cli("generate", PROMPT, "--model", "demo", "--slg-scale", 2.5, "--slg-layers", "0,9", "-o", "x.png")
    assert_one_line_error(r, "--slg-layers 9", "4 layers")
    r = cli("generate", PROMPT, "--model", "demo", "--slg-scale", 2.5, "--slg-layers", "a,b", "-o", "x.png")
    assert_one_line_error(r, "--slg-layers a,b")


def test_hints_for_settings_that_do_nothing(cli):
    r = gen(cli, "a.png", "--slg-scale", 2, "--slg-layers", "1", "--slg-start", 0.6, "--slg-stop", 0.9)
    assert "holds none of the 2 steps" in r.stderr
    r = gen(cli, "b.png", "--dype")
    assert "--dype changes nothing at 32x32" in r.stderr
    r = gen(cli, "c.png", "--slg-layers", "1", "--dype-scale", 1.0)
    assert "--slg-layers given, but SLG is off" in r.stderr and "--dype-scale given, but DyPE is off" in r.stderr
    assert max_diff("c.png", "b.png") == 0


def test_slg_switch_uses_family_defaults_and_records_them(cli):
    from llmdit_cli.families.zimage import VARIANTS as FAMILIES
    from llmdit_cli.pngmeta import settings_of

    gen(cli, "on.png", "--slg")
    s = settings_of(open("on.png", "rb").read(), "on.png")
    fam = FAMILIES["demo"]
    assert (s["slg_scale"], s["slg_layers"], s["slg_start"], s["slg_stop"]) == (
        fam["slg_scale"],
        fam["slg_layers"],
        fam["slg_start"],
        fam["slg_stop"],
    )
    gen(cli, "off.png")
    assert settings_of(open("off.png", "rb").read(), "off.png")["slg_scale"] == 0
    assert max_diff("on.png", "off.png") > 0
    # The recorded settings make the same image again.
    assert cli("generate", "--from-png", "on.png", "-o", "again.png").code == 0
    assert max_diff("on.png", "again.png") == 0


def _tiny_dit(n_layers=3, seed=0):
    from llmdit_cli.tiny import build_pipeline

    return build_pipeline(seed=seed, transformer={"n_layers": n_layers}).transformer.eval()


def _inputs(n, seed=0, size=8, cap=32):
    g = torch.Generator().manual_seed(seed)
    lat = torch.randn(n, 16, size, size, generator=g)
    cond = [torch.randn(5 + i, cap, generator=g) for i in range(n)]
    uncond = [torch.randn(3, cap, generator=g) for _ in range(n)]
    return lat, cond, uncond


def _skipping_by_forward_hooks(dit, layers):
    """Independent skip: plain forward hooks that hand back each block's input."""
    return [dit.layers[i].register_forward_hook(lambda m, args, out: args[0]) for i in layers]


@pytest.mark.parametrize("n,cfg", [(1, 0.0), (2, 0.0), (1, 3.0), (2, 3.0)])
def test_slg_math_composes_with_cfg_and_batches(n, cfg):
    from llmdit_cli.families.zimage.denoise import DenoiseParams, guided_velocity
    from llmdit_cli.guidance.guiders import Step
    from llmdit_cli.guidance.slg import SLGConfig

    dit = _tiny_dit()
    lat, cond, uncond = _inputs(n)
    t = torch.full((n,), 0.3)
    step = Step(0, 1, 0.3)

    def velocity(params, negatives):
        guiders = params.guiders()
        with ExitStack() as hooks:
            for g in guiders:
                hooks.enter_context(g.attach(dit.layers))
            return guided_velocity(dit, lat, t, cond, negatives, guiders, step)

    with torch.no_grad():
        plain = velocity(DenoiseParams(1, guidance_scale=cfg), uncond if cfg else [])
        guided = velocity(DenoiseParams(1, guidance_scale=cfg, slg=SLGConfig(2.0, [0, 2])), uncond if cfg else [])
        pos = velocity(DenoiseParams(1), [])
        handles = _skipping_by_forward_hooks(dit, [0, 2])
        skip = velocity(DenoiseParams(1), [])
        for h in handles:
            h.remove()
    assert guided.shape == plain.shape == (n, 16, 1, 8, 8)
    torch.testing.assert_close(guided, plain + 2.0 * (pos - skip), rtol=1e-5, atol=1e-5)
    assert (guided - plain).abs().max() > 1e-3


def _loop(dit, p, lat, cond, on_step=None):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from llmdit_cli.families.zimage.denoise import run_loop, set_timesteps

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    steps = set_timesteps(sched, p.steps, 16, "cpu")
    sched.set_begin_index(0)
    return run_loop(dit, sched, steps, lat.clone(), cond, [], p, on_step)


def test_slg_runs_one_extra_pass_per_step_in_its_window():
    from llmdit_cli.families.zimage.denoise import DenoiseParams
    from llmdit_cli.guidance.slg import SLGConfig

    dit = _tiny_dit()
    lat, cond, _ = _inputs(1)
    calls = []
    dit.register_forward_pre_hook(lambda m, a: calls.append(1))
    _loop(dit, DenoiseParams(steps=8, slg=SLGConfig(scale=2.5, layers=[1], start=0.25, stop=0.5)), lat, cond)
    assert len(calls) == 8 + 2  # steps 2 and 3 of 0..7 lie in [0.25, 0.5)


def test_cfg_truncation_drops_the_unconditional_pass_once_past_it():
    """The CFG guider asks for the negative pass only while progress <= truncation: the batch the
    transformer sees halves from then on."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from llmdit_cli.families.zimage.denoise import DenoiseParams, run_loop, set_timesteps

    dit = _tiny_dit()
    lat, cond, uncond = _inputs(1)
    batches = []
    dit.register_forward_pre_hook(lambda m, a: batches.append(len(a[0])))
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    steps = set_timesteps(sched, 6, 16, "cpu")
    sched.set_begin_index(0)
    progress = [float((1000 - t) / 1000) for t in steps]
    run_loop(dit, sched, steps, lat.clone(), cond, uncond, DenoiseParams(6, guidance_scale=3.0, cfg_truncation=0.5))
    assert batches == [2 if x <= 0.5 else 1 for x in progress]
    assert 1 in batches and 2 in batches


def test_a_guider_joins_the_loop_without_changing_it():
    """A new method is a Guider in the family's list: here one that asks for the negative pass
    and moves away from it, which is CFG written again; the loop gives CFG's latents."""
    from llmdit_cli.families.zimage.denoise import DenoiseParams
    from llmdit_cli.guidance.guiders import UNCOND, Guider

    class AwayFromNegative(Guider):
        def needs(self, step):
            return frozenset({UNCOND})

        def combine(self, pred, p, step):
            return pred + 2.0 * (p.cond - p.uncond)

    class Custom(DenoiseParams):
        def guiders(self):
            return [AwayFromNegative()]

    dit = _tiny_dit()
    lat, cond, uncond = _inputs(1)

    def run(p):
        from diffusers import FlowMatchEulerDiscreteScheduler

        from llmdit_cli.families.zimage.denoise import run_loop, set_timesteps

        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
        steps = set_timesteps(sched, p.steps, 16, "cpu")
        sched.set_begin_index(0)
        return run_loop(dit, sched, steps, lat.clone(), cond, uncond, p)

    torch.testing.assert_close(run(Custom(3)), run(DenoiseParams(3, guidance_scale=2.0)))
    assert not torch.equal(run(Custom(3)), run(DenoiseParams(3)))


def test_hooks_are_removed_after_an_interrupted_run():
    from llmdit_cli.families.zimage.denoise import DenoiseParams
    from llmdit_cli.guidance.dype import DyPEConfig
    from llmdit_cli.guidance.slg import SLGConfig

    dit = _tiny_dit()
    lat, cond, _ = _inputs(1, size=16)
    base = _loop(dit, DenoiseParams(steps=3), lat, cond)
    stock_rope = dit.rope_embedder

    def interrupt(done, total):
        raise KeyboardInterrupt

    guided = DenoiseParams(
        steps=3, slg=SLGConfig(scale=3.0, layers=[0, 1], start=0.0, stop=1.0), dype=DyPEConfig(base_tokens=2)
    )
    with pytest.raises(KeyboardInterrupt):
        _loop(dit, guided, lat, cond, interrupt)
    assert dit.rope_embedder is stock_rope
    assert all(not getattr(m, "_diffusers_hook", None) or not m._diffusers_hook.hooks for m in dit.modules())
    assert torch.equal(_loop(dit, DenoiseParams(steps=3), lat, cond), base)
    assert not torch.equal(_loop(dit, guided, lat, cond), base)  # the guided run itself differs


# --- DyPE ----------------------------------------------------------------------------------------


def _ids(cap_len, h, w):
    """Caption then image position ids, as ZImageTransformer2DModel builds them."""
    cap = torch.stack(
        [torch.arange(1, cap_len + 1), torch.zeros(cap_len, dtype=torch.long), torch.zeros(cap_len, dtype=torch.long)],
        dim=-1,
    )
    hh, ww = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    img = torch.stack([torch.full((h * w,), cap_len + 1), hh.flatten(), ww.flatten()], dim=-1)
    return torch.cat([cap, img]).to(torch.int32)


def _dype_rope(method, base_tokens, grid, sigma, **kw):
    from llmdit_cli.families.zimage.rope import DyPERope, _State
    from llmdit_cli.guidance.dype import DyPEConfig

    dit = _tiny_dit()
    state = _State()
    state.sigma, state.grid = sigma, grid
    return dit.rope_embedder, DyPERope(dit.rope_embedder, DyPEConfig(base_tokens, method, **kw), state)


@pytest.mark.parametrize("method", ["yarn", "ntk", "vision_yarn"])
def test_dype_at_base_resolution_is_the_stock_rope(method):
    stock, dype = _dype_rope(method, 8, (8, 8), sigma=1.0)
    ids = _ids(32, 8, 8)
    ours, ref = dype(ids), stock(ids)
    assert ours.dtype == ref.dtype == torch.complex64 and ours.shape == ref.shape
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("method", ["yarn", "ntk", "vision_yarn"])
def test_dype_at_twice_the_base_changes_only_the_spatial_axes(method):
    stock, dype = _dype_rope(method, 8, (16, 16), sigma=0.9)
    ids = _ids(32, 16, 16)
    ours, ref = dype(ids), stock(ids)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape and ours.device == ref.device
    assert not torch.isnan(torch.view_as_real(ours)).any()
    cap_cols = stock.axes_dims[0] // 2
    assert torch.equal(ours[:, :cap_cols], ref[:, :cap_cols])  # caption axis untouched
    assert (ours[:, cap_cols:] - ref[:, cap_cols:]).abs().max() > 1e-3


def test_dype_fades_towards_the_stock_rope_as_sigma_falls():
    ids = _ids(32, 2, 2)  # positions 0 and 1 only: no angle wraps around, so gaps compare
    gaps = []
    for sigma in (1.0, 0.6, 0.3, 0.05):
        stock, dype = _dype_rope("yarn", 8, (16, 16), sigma=sigma, scale=1.0, exponent=1.0)
        gaps.append(float((dype(ids) - stock(ids)).abs().mean()))
    assert gaps == sorted(gaps, reverse=True) and gaps[0] > 5 * gaps[-1], gaps


def test_positions_beyond_the_table_extend_it_with_the_stock_formula():
    from llmdit_cli.families.zimage.rope import positions_for

    dit = _tiny_dit()
    rope = dit.rope_embedder
    inside = rope(_ids(32, 8, 8))
    with positions_for(dit, (48, 40)):
        big = rope(_ids(32, 48, 40))
        again = rope(_ids(32, 8, 8))
    assert big.shape[0] == 32 + 48 * 40 and torch.equal(again, inside)
    assert rope.axes_lens == dit.config.axes_lens


def test_dype_cli_base_resolution_equals_plain_and_twice_differs(cli):
    gen(cli, "plain32.png")
    gen(cli, "dype32.png", "--dype")
    assert max_diff("plain32.png", "dype32.png") == 0
    gen(cli, "plain64.png", "-W", 64, "-H", 64)
    gen(cli, "dype64.png", "-W", 64, "-H", 64, "--dype", "--dype-method", "yarn")
    assert pixels("dype64.png").shape == (64, 64, 3)
    assert max_diff("plain64.png", "dype64.png") > 10


def test_dype_bad_values_are_one_line_errors(cli):
    r = cli("generate", PROMPT, "--model", "demo", "--dype", "--dype-method", "linear", "-o", "x.png")
    assert_one_line_error(r, "--dype-method")
    r = cli("generate", PROMPT, "--model", "demo", "--dype", "--dype-start-sigma", 0, "-o", "x.png")
    assert_one_line_error(r, "--dype-start-sigma")
    r = cli("generate", PROMPT, "--model", "demo", "--dype", "--dype-base-resolution", 0, "-o", "x.png")
    assert_one_line_error(r, "--dype-base-resolution")
    r = cli("generate", PROMPT, "--model", "demo", "--dype", "--dype-scale", 300, "-o", "x.png")
    assert_one_line_error(r, "--dype-scale")


def test_img2img_takes_every_guidance_and_speed_flag(cli):
    from llmdit_cli.pngmeta import settings_of

    gen(cli, "start.png")
    flags = [
        "--slg",
        "--slg-scale",
        2.0,
        "--slg-layers",
        "1",
        "--slg-start",
        0.0,
        "--slg-stop",
        1.0,
        "--dype",
        "--dype-method",
        "ntk",
        "--dype-scale",
        1.5,
        "--dype-exponent",
        1.0,
        "--dype-start-sigma",
        0.9,
        "--dype-base-resolution",
        16,
        "--attention-backend",
        "sdpa",
        "--no-compile",
        "--vae-tiling",
        "--cpu-offload",
        "none",
        "--quantize",
        "none",
    ]
    common = ["img2img", PROMPT, "--image", "start.png", "--model", "demo", "--seed", 1, "--strength", 1.0]
    r = cli(*common, *flags, "-o", "out.png")
    assert r.code == 0, r.stderr
    assert cli(*common, "-o", "plain.png").code == 0 and max_diff("out.png", "plain.png") > 0
    s = settings_of(open("out.png", "rb").read(), "out.png")
    assert (
        s["mode"],
        s["slg_scale"],
        s["slg_layers"],
        s["dype"],
        s["dype_method"],
        s["dype_base_resolution"],
        s["attention_backend"],
        s["vae_tiling"],
    ) == ("img2img", 2.0, [1], True, "ntk", 16, "sdpa", True)


def test_img2img_keeps_the_slg_window_in_the_full_schedule():
    """img2img runs the last steps of the schedule; the window is a fraction of the full one."""
    from llmdit_cli.families.zimage.denoise import DenoiseParams, img2img
    from llmdit_cli.guidance.slg import SLGConfig
    from llmdit_cli.tiny import build_pipeline

    pipe = build_pipeline(seed=1)
    lat, cond, _ = _inputs(1)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda m, a: calls.append(1))
    for window, extra in (((0.0, 0.5), 0), ((0.5, 1.0), 2)):
        calls.clear()
        p = DenoiseParams(steps=4, slg=SLGConfig(scale=2.0, layers=[0], start=window[0], stop=window[1]))
        img2img(pipe, cond, [], p, lat, 0.5, torch.Generator().manual_seed(0))
        assert len(calls) == 2 + extra, window  # strength 0.5 of 4 steps: steps 2 and 3 run


def test_dype_at_512_on_the_demo(cli):
    """The issue's acceptance size: 16x the demo's base, beyond its 256 px position table."""
    plain = gen(cli, "plain.png", "-W", 512, "-H", 512, "--steps", 1)
    assert "beyond the 256 px" in plain.stderr and "--dype" in plain.stderr
    gen(cli, "dype.png", "-W", 512, "-H", 512, "--steps", 1, "--dype")
    assert pixels("dype.png").shape == (512, 512, 3) and pixels("dype.png").std() > 5
    assert max_diff("plain.png", "dype.png") > 10


def test_vision_yarn_bands_interpolate_the_slow_keep_the_fast_and_move_with_kappa():
    """Below ~1 turn over the base side: w / s; the fastest frequencies: native once kappa is 0."""
    import math

    from llmdit_cli.guidance.dype import scaled_frequencies

    dim, theta, base_len, s = 48, 256.0, 64, 2.0  # Z-Image's spatial axis at 2048 px
    base = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    turns = base_len * base / (2 * math.pi)
    early, magnitude = scaled_frequencies("vision_yarn", dim, theta, base_len, s, 2.0)
    late, _ = scaled_frequencies("vision_yarn", dim, theta, base_len, s, 0.0)
    slow = turns < 0.5
    assert torch.allclose(early[slow], base[slow] / s) and torch.allclose(late[slow], base[slow] / s)
    fast = turns > 2
    assert torch.allclose(late[fast], base[fast])  # late in sampling the detail frequencies are native
    assert (early[fast] < base[fast]).any()  # early they are compressed (NTK)
    assert magnitude == pytest.approx(1 + 0.1 * math.log(s) / math.sqrt(s))


def test_each_family_has_its_measured_dype_method(cli):
    from llmdit_cli.families.zimage import VARIANTS
    from llmdit_cli.pngmeta import settings_of

    assert VARIANTS["demo"]["dype_method"] == "yarn"  # benchmarks/eval_dype.py
    assert VARIANTS["z-image-turbo"]["dype_method"] == VARIANTS["z-image"]["dype_method"] == "vision_yarn"
    gen(cli, "d.png", "-W", 64, "-H", 64, "--dype")
    assert settings_of(open("d.png", "rb").read(), "d.png")["dype_method"] == "yarn"
    gen(cli, "v.png", "-W", 64, "-H", 64, "--dype", "--dype-method", "vision_yarn")
    assert settings_of(open("v.png", "rb").read(), "v.png")["dype_method"] == "vision_yarn"


def test_dype_alone_stops_the_tiling_on_the_demo_at_twice_its_base(cli):
    """What DyPE is for: at 64 px (2x) the demo tiles its shape 2x2; `--dype` keeps one shape
    (the criterion of benchmarks/eval_dype.py, on part of its prompts)."""
    from PIL import Image

    from llmdit_cli.train.evaluate import dominant
    from llmdit_cli.train.shapes import caption, held_out

    wanted = sorted(held_out())[::6]  # 3 of the 18 held-out prompts
    kept = {"off": 0, "on": 0}
    for shape, colour, background in wanted:
        for seed in (1, 2):
            for label, extra in (("off", []), ("on", ["--dype"])):
                out = f"{label}-{shape}-{colour}-{seed}.png"
                r = cli("generate", caption(shape, colour, background), "--model", "demo", "-W", 64, "-H", 64,
                        "--seed", seed, *extra, "-o", out)  # fmt: skip
                assert r.code == 0, r.stderr
                kept[label] += dominant(Image.open(out), colour)
    assert kept["off"] == 0 and kept["on"] >= 5, kept
