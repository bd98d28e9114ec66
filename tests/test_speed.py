"""Speed without other pictures: a batch of images per transformer forward gives each image's own
pixels, the first-block step cache is transparent when it never reuses and reuses on the demo at
its default threshold (with the image it records made again by `--from-png`), and PNGs written
while the next image is made come out in order, whole."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import as_array, assert_one_line_error, max_diff, pixels

PROMPTS = ["a red circle on a blue background", "a green square"]  # different caption lengths
BASE = ["generate", PROMPTS[0], "--model", "demo", "-W", "32", "-H", "32", "--steps", "3"]


def request(prompts=PROMPTS, seeds=(1, 2, 3), **flags):
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import GenerateRequest

    settings = resolve_defaults({"model": "demo", "width": 64, "height": 64, "steps": 4, **flags})
    return GenerateRequest(settings, seeds=list(seeds), prompts=list(prompts))


def images(results) -> list[np.ndarray]:
    return [as_array(g.image) for g in results]


@pytest.fixture(scope="module")
def engine():
    from llmdit_cli.engine import Engine

    return Engine()


@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"guidance_scale": 3.0, "slg": True, "slg_scale": 2.0, "slg_layers": [1]},
        {"guidance_scale": 3.0, "cfg_truncation": 0.5, "cfg_normalization": 1.2},
    ],
    ids=["plain", "cfg-slg", "cfg-truncated"],
)
def test_batched_images_equal_one_at_a_time(engine, flags):
    one = images(engine.generate(request(**flags)))
    for size in (2, 4, 6):
        batched = engine.generate(request(batch_size=size, **flags))
        assert [g.seed for g in batched] == [1, 2, 3, 1, 2, 3]
        assert [g.prompt for g in batched] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
        assert max(max_diff(a, b) for a, b in zip(one, images(batched))) <= 2, size
    assert max_diff(one[0], one[1]) > 10  # each image its own seed's noise


def test_batched_img2img_equals_one_at_a_time(engine):
    from PIL import Image

    start = Image.new("RGB", (64, 64), (200, 40, 40))
    reqs = [request(seeds=(4, 5), strength=0.7, batch_size=b) for b in (1, 2)]
    for req in reqs:
        req.mode, req.init, req.init_source = "img2img", start, "start.png"
    one, batched = (images(engine.generate(req)) for req in reqs)
    assert max(max_diff(a, b) for a, b in zip(one, batched)) <= 2
    assert max_diff(one[0], one[1]) > 5


def test_requests_batched_together_keep_their_own_images(engine):
    """The server's dynamic batching: requests that differ in prompt, seed and negative prompt run
    as one batch, and each gets what it gets alone."""
    alone = [
        images(engine.generate(request([p], [s], guidance_scale=2.0, negative_prompt=n)))
        for p, s, n in [(PROMPTS[0], 7, "blur"), (PROMPTS[1], 8, "")]
    ]
    reqs = [
        request([p], [s], guidance_scale=2.0, negative_prompt=n, batch_size=2)
        for p, s, n in [(PROMPTS[0], 7, "blur"), (PROMPTS[1], 8, "")]
    ]
    together = [images(made) for made in engine.generate_many(reqs)]
    assert [len(t) for t in together] == [1, 1]
    assert max(max_diff(a[0], b[0]) for a, b in zip(alone, together)) <= 2


def test_requests_that_differ_in_a_setting_are_not_batched(engine):
    from llmdit_cli.errors import UsageError

    with pytest.raises(UsageError, match="share every setting"):
        engine.generate_many([request(["a"], [1]), request(["b"], [2], steps=5)])


def _denoise(pipe, e, steps, cache=None, seed=0):
    import torch

    from llmdit_cli.families.zimage.denoise import DenoiseParams, txt2img

    p = DenoiseParams(steps=steps, guidance_scale=2.0, step_cache=cache)
    return txt2img(pipe, e.cond, e.uncond, p, 64, 64, torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def demo_parts(engine):
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import EncodeRequest

    r = resolve_defaults({"model": "demo"})
    e = engine.encode(EncodeRequest(r, [PROMPTS[0]]))
    return engine.model(r)[0].pipeline("transformer", "vae"), e


def test_a_cache_that_never_reuses_changes_nothing(demo_parts):
    import torch

    from llmdit_cli.stages.step_cache import StepCacheConfig

    pipe, e = demo_parts
    plain = _denoise(pipe, e, 6)
    never = _denoise(pipe, e, 6, StepCacheConfig(threshold=1e-12))
    assert torch.equal(plain, never)
    assert not any(
        getattr(b, "_diffusers_hook", None) and b._diffusers_hook.get_hook("llmdit_step_cache")
        for b in pipe.transformer.layers
    )  # the hooks came off


def test_the_cache_reuses_steps_on_the_demo_and_stays_close(demo_parts, monkeypatch):
    """At the default threshold, on the demo at 30 steps and 64 px: some passes reuse the kept
    residual (what makes it faster; benchmarks/bench_speed.py times it) and the image stays
    close to the uncached one (PSNR over 30 dB)."""
    from llmdit_cli.config import OptimizationSettings
    from llmdit_cli.families.zimage.vae import decode_latents
    from llmdit_cli.stages import step_cache
    from llmdit_cli.stages.step_cache import StepCacheConfig

    made = []
    original = step_cache.StepCache.__init__

    def keep(self, *a, **k):
        original(self, *a, **k)
        made.append(self)

    monkeypatch.setattr(step_cache.StepCache, "__init__", keep)
    pipe, e = demo_parts
    default = OptimizationSettings.model_fields["step_cache_threshold"].default
    plain = _denoise(pipe, e, 30, seed=3)
    cached = _denoise(pipe, e, 30, StepCacheConfig(default), seed=3)
    reused, computed = made[0].reused, made[0].computed
    assert reused >= 8 and computed >= 5, (reused, computed)
    a, b = (as_array(decode_latents(pipe, x)[0]).astype(float) for x in (plain, cached))
    psnr = 10 * np.log10(255**2 / ((a - b) ** 2).mean())
    assert 30 <= psnr < 80, psnr


def test_cached_images_record_the_cache_and_from_png_repeats_them(cli):
    args = ["generate", PROMPTS[0], "--model", "demo", "-W", "64", "-H", "64", "--steps", "12", "--seed", "5"]
    assert cli(*args, "-o", "plain.png").code == 0
    r = cli(*args, "--step-cache", "first-block", "--step-cache-threshold", "0.3", "-o", "cached.png", "--json")
    assert r.code == 0, r.stderr
    record = json.loads(r.stdout.splitlines()[-1])["settings"]
    assert record["step_cache"] == "first-block" and record["step_cache_threshold"] == 0.3
    assert max_diff(pixels("plain.png"), pixels("cached.png")) > 3  # the cache acted
    again = cli("generate", "--from-png", "cached.png", "-o", "again.png")
    assert again.code == 0, again.stderr
    assert max_diff(pixels("cached.png"), pixels("again.png")) == 0
    assert cli("generate", "--from-png", "plain.png", "-o", "plain-again.png").code == 0
    assert max_diff(pixels("plain.png"), pixels("plain-again.png")) == 0


def test_step_cache_refusals_name_the_flag(cli, tmp_path):
    base = ["generate", "a", "--model", "demo", "-W", "32", "-H", "32", "--steps", "2", "-o", "x.png"]
    r = cli(*base, "--step-cache", "every-other")
    assert_one_line_error(r, "--step-cache")
    r = cli(*base, "--step-cache", "first-block", "--step-cache-threshold", "0")
    assert_one_line_error(r, "--step-cache-threshold")
    from PIL import Image

    Image.new("RGB", (32, 32), "white").save(tmp_path / "edges.png")
    r = cli(
        *base, "--step-cache", "first-block", "--controlnet", "demo", "--control-image", str(tmp_path / "edges.png")
    )
    assert_one_line_error(r, "--step-cache")
    r = cli(*base, "--batch-size", "0")
    assert_one_line_error(r, "--batch-size")


def test_images_written_while_the_next_is_made_keep_their_order(cli):
    r = cli(*BASE, "--seed", "1", "--num-images", "4", "--batch-size", "3", "-o", "out/{index}-{seed}.png", "--json")
    assert r.code == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(x["path"], x["seed"]) for x in records] == [(f"out/{i}-{1 + i}.png", 1 + i) for i in range(4)]
    one = cli(*BASE, "--seed", "3", "-o", "three.png")
    assert one.code == 0 and max_diff(pixels("out/2-3.png"), pixels("three.png")) <= 2


def test_a_failed_write_stops_with_one_line_and_nothing_half_written(cli, tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "1-2.png").mkdir()  # the second image's path is taken by a folder
    r = cli(*BASE, "--seed", "1", "--num-images", "4", "-o", "out/{index}-{seed}.png")
    assert_one_line_error(r, "1-2.png: is a folder")  # seen before any image is made
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["1-2.png"]
    real = os.replace

    def full_disk_at_the_second(src, dst):  # a write that fails while the images are being made
        if str(dst).endswith("1-2.png"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    (tmp_path / "out" / "1-2.png").rmdir()
    monkeypatch.setattr(os, "replace", full_disk_at_the_second)
    r = cli(*BASE, "--seed", "1", "--num-images", "4", "-o", "out/{index}-{seed}.png")
    assert_one_line_error(r, "1-2.png: cannot write (No space left on device)")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0-1.png"]  # no temporary files left


def test_the_server_batches_waiting_requests_and_each_gets_its_own_pixels(cli):
    """While a slow request runs, four that share their settings arrive; they run as one batch
    (the log says so) and each image equals `generate` one at a time (max diff <= 2)."""
    import base64
    import threading

    from helpers import Server

    server = Server("--model", "demo", "--max-batch", "4")
    try:
        slow = {"prompt": "slow", "size": "128x128", "llmdit": {"seed": 1, "steps": 40}}
        jobs = [{"prompt": f"a red circle number {i}", "size": "64x64", "llmdit": {"seed": 10 + i}} for i in range(4)]
        replies: dict = {}

        def post(name, body):
            replies[name] = server.json("POST", "/v1/images/generations", body)

        first = threading.Thread(target=post, args=("slow", slow))
        first.start()
        deadline = 200
        while not server.json("GET", "/v1/llmdit/status")[1]["running"] and deadline:
            deadline -= 1
            threading.Event().wait(0.05)
        threads = [threading.Thread(target=post, args=(i, body)) for i, body in enumerate(jobs)]
        for t in [*threads]:
            t.start()
        for t in [first, *threads]:
            t.join(120)
        log = server.output()
    finally:
        server.stop()
    assert "(in a batch of" in log, log
    for i, body in enumerate(jobs):
        status, reply = replies[i]
        assert status == 200, reply
        Path(f"served-{i}.png").write_bytes(base64.b64decode(reply["data"][0]["b64_json"]))
        r = cli(
            "generate",
            body["prompt"],
            "--model",
            "demo",
            "-W",
            "64",
            "-H",
            "64",
            "--seed",
            10 + i,
            "-o",
            f"alone-{i}.png",
        )
        assert r.code == 0, r.stderr
        assert max_diff(pixels(f"served-{i}.png"), pixels(f"alone-{i}.png")) <= 2


def test_a_sweep_batches_cells_that_differ_in_prompt_and_seed(cli, tmp_path):
    recipe = """
model = "demo"
prompts = ["a red circle on a blue background", "a green square"]
seeds = [1, 2, 3]
[base]
generation.width = 32
generation.height = 32
generation.batch_size = BATCH
[grid]
generation.steps = [2, 3]
"""
    for batch in (1, 4):
        path = tmp_path / f"b{batch}.toml"
        path.write_text(recipe.replace("BATCH", str(batch)))
        r = cli("sweep", str(path), "-q")
        assert r.code == 0, r.stderr
    images = {b: sorted((tmp_path / "runs" / f"b{b}" / "images").iterdir()) for b in (1, 4)}
    assert [p.name for p in images[1]] == [p.name for p in images[4]] and len(images[1]) == 12
    assert max(max_diff(pixels(a), pixels(b)) for a, b in zip(images[1], images[4])) <= 2
    seconds = [json.loads(x)["seconds"] for x in (tmp_path / "runs" / "b4" / "manifest.jsonl").read_text().splitlines()]
    assert len(set(seconds)) < len(seconds)  # cells of one batch share its time
    # The batch size leaves the cells as they are: a rerun with another one has nothing to do.
    (tmp_path / "b4.toml").write_text(recipe.replace("BATCH", "2"))
    r = cli("sweep", str(tmp_path / "b4.toml"), "-q")
    assert r.code == 0, r.stderr
    assert len((tmp_path / "runs" / "b4" / "manifest.jsonl").read_text().splitlines()) == 12


def test_a_reusing_pass_moves_the_kept_residual_along_its_last_change():
    import torch

    from llmdit_cli.stages.step_cache import EXTRAPOLATION, _extrapolated, _PassState

    state = _PassState(rest_residual=torch.full((2,), 2.0), since=1, gap=2)
    assert torch.equal(_extrapolated(state), state.rest_residual)  # one full pass only: as kept
    state.earlier_rest = torch.full((2,), 1.0)  # it grew by 1 over the 2 passes between the full ones
    assert torch.allclose(_extrapolated(state), torch.full((2,), 2.0 + EXTRAPOLATION * 0.5))
    state.earlier_rest = torch.ones(3)  # a batch of another shape (CFG truncated): as kept
    assert torch.equal(_extrapolated(state), state.rest_residual)
