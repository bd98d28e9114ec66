"""benchmarks/gpu_full.py --tiny: the full-size GPU benchmark's code path (build, stock pipeline,
in-process `llmdit generate`, stage functions, report) on CPU with the tiny models, so the script
that runs on a lent GPU has been exercised before it gets there."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu_full")
    out = tmp / "gpu_full.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "XDG_CONFIG_HOME": str(tmp)}
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "gpu_full.py"),
        "--tiny",
        "--skip-compile",
        "--roles",
        "stock,llmdit,speed,fp8",
        "--repeats",
        "1",
        "--folder",
        str(tmp / "z-image-turbo-random-tiny"),
        "--work",
        str(tmp / "work"),
        "--out",
        str(out),
        "--profile",
    ]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return r.stdout, json.loads(out.read_text())


def test_prints_its_table(tiny_run):
    stdout, _ = tiny_run
    assert "| variant | s / image | peak GiB | vs stock | util (datasheet) | util (measured) |" in stdout
    assert "| stock ZImagePipeline |" in stdout and "| llmdit generate (sdpa) |" in stdout
    # --profile: one more image of each under torch.profiler and cProfile, for the log
    for name in ("stock ZImagePipeline", "llmdit generate"):
        assert f"## profile: {name}, torch.profiler" in stdout and f"## profile: {name}, Python functions" in stdout
    assert "writing one such image as PNG with PIL" in stdout and "llmdit's encoder" in stdout


def test_stock_and_llmdit_make_images_with_sane_numbers(tiny_run):
    _, report = tiny_run
    rows = {row["name"]: row for row in report["rows"]}
    for name in (
        "stock ZImagePipeline",
        "llmdit generate (sdpa)",
        "llmdit generate --num-images 4 (per image)",
        "llmdit stages (sdpa, no PNG)",
    ):
        row = rows[name]
        assert row["ok"], row
        assert row["median_s"] > 0 and row["peak_gib"] > 0 and len(row["seconds"]) == 1
        assert row["ratio_to_stock"] > 0
    for name in ("stock ZImagePipeline", "llmdit generate (sdpa)"):
        assert Path(rows[name]["image"]).stat().st_size > 0
        assert rows[name]["image_std"] > 0
    # Same seed, same arithmetic: llmdit reproduces the stock pipeline's image.
    assert report["psnr_stock_llmdit_db"] > 40


def test_fp8_row_has_its_distance_from_the_bf16_image(tiny_run):
    stdout, report = tiny_run
    rows = {row["name"]: row for row in report["rows"]}
    row = rows["llmdit generate --quantize fp8"]
    assert row["ok"], row
    # float8 changes the image a little, not into another one
    assert 25 < row["psnr_vs_bf16"] < math.inf
    assert "llmdit generate --quantize fp8 --compile" not in rows  # --skip-compile
    assert "llmdit generate --quantize fp8 vs the bf16 `llmdit generate` image: PSNR" in stdout


def test_flop_count_matches_the_formula(tiny_run):
    _, report = tiny_run
    f = report["flops"]
    assert f["dit_forward_counted"] == pytest.approx(f["dit_forward_analytic"], rel=1e-9)
    assert f["text_encoder"] > 0 and f["vae_decode"] > 0
    assert f["per_image"] == pytest.approx(
        f["dit_forward_counted"] * report["steps"] + f["text_encoder"] + f["vae_decode"]
    )
    assert all(f["finite"].values())
    assert f["caption_tokens"] == 64 and f["sequence"] == 32 + 64  # 16 image tokens pad to 32


def test_model_folder_is_removed_without_keep(tiny_run):
    _, report = tiny_run
    assert report["folder"].endswith("z-image-turbo-random-tiny")
    assert not Path(report["folder"]).exists()
