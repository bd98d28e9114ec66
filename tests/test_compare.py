"""`llmdit compare`: grids, side by side, differences, metrics, prompt scores, and the HTML
report opened in headless Chromium."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, chromium

RECIPE = """
model = "demo"
prompts = ["a red circle on a blue background"]
seeds = [1, 2]
[base]
generation.width = 32
generation.height = 32
[grid]
scheduler.shift = [1.0, 3.0]
generation.steps = [2, 3]
"""


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """One small finished sweep, shared by the tests here (copied where a test changes it)."""
    from typer.testing import CliRunner

    from llmdit_cli.cli.app import app

    root = tmp_path_factory.mktemp("compare")
    (root / "c.toml").write_text(RECIPE)
    r = CliRunner().invoke(app, ["sweep", str(root / "c.toml"), "-o", str(root / "runs" / "c"), "-q"])
    assert r.exit_code == 0, r.output
    return root / "runs" / "c"


def png(path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def test_list_finds_runs(cli, run_folder):
    r = cli("compare", run_folder.parent, "--list", "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["name"] == "c" and info["cells"] == info["done"] == 8
    assert info["axes"] == ["scheduler.shift", "generation.steps"]


def test_grid_has_a_labelled_tile_per_cell(cli, run_folder, tmp_path):
    r = cli(
        "compare",
        run_folder,
        "--rows",
        "scheduler.shift",
        "--cols",
        "generation.steps",
        "--where",
        "seed=2",
        "-o",
        "g.png",
    )
    assert r.code == 0, r.stderr
    grid = png("g.png")
    tiles = [png(run_folder / rec["image"]) for rec in _records(run_folder) if rec["seed"] == 2]
    # every tile of seed 2 appears in the grid, pixel for pixel
    for tile in tiles:
        assert _contains(grid, tile)
    other = png(next(run_folder / rec["image"] for rec in _records(run_folder) if rec["seed"] == 1))
    assert not _contains(grid, other)


def test_one_grid_per_value_of_the_axes_not_shown(cli, run_folder):
    r = cli("compare", run_folder, "--rows", "scheduler.shift", "--cols", "generation.steps", "-o", "grid-{index}.png")
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in Path(".").glob("grid-*.png")) == ["grid-0.png", "grid-1.png"]


def test_metrics_against_a_reference_match_scikit_image(cli, run_folder):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    r = cli("compare", run_folder, "--where", "seed=1", "--reference", "scheduler.shift=3.0", "-o", "m.png")
    assert r.code == 0, r.stderr
    rows = list(csv.DictReader(open("m.metrics.csv")))
    assert len(rows) == 4 and json.loads(Path("m.metrics.json").read_text())[0].keys() >= {"psnr", "ssim", "reference"}
    for row in rows:
        a, b = png(row["reference"]), png(row["image"])
        if row["scheduler.shift"] == "3.0":
            assert row["psnr"] == "inf" and float(row["ssim"]) == 1.0
            continue
        assert math.isclose(float(row["psnr"]), peak_signal_noise_ratio(a, b, data_range=255), rel_tol=1e-9)
        expected = structural_similarity(a, b, channel_axis=2, data_range=255, win_size=7)
        assert math.isclose(float(row["ssim"]), expected, rel_tol=1e-9)


@pytest.mark.parametrize("diff_mode", ["absolute", "highlight", "heatmap"])
def test_diff_tiles_show_the_difference(cli, run_folder, diff_mode):
    from PIL import Image

    from llmdit_cli.compare.images import difference

    r = cli(
        "compare",
        run_folder,
        "--where",
        "seed=1",
        "--mode",
        "diff",
        "--diff-mode",
        diff_mode,
        "--reference",
        "generation.steps=2",
        "-o",
        "d.png",
    )
    assert r.code == 0, r.stderr
    recs = {
        (rec["axes"]["scheduler.shift"], rec["axes"]["generation.steps"]): rec
        for rec in _records(run_folder)
        if rec["seed"] == 1
    }
    ref, other = (Image.open(run_folder / recs[(1.0, s)]["image"]).convert("RGB") for s in (2, 3))
    expected = np.asarray(difference(ref, other, diff_mode))
    assert _contains(png("d.png"), expected)
    if diff_mode == "absolute":
        assert expected.max() == 255  # stretched to the full range
        assert np.asarray(difference(ref, ref, diff_mode)).max() == 0


def test_side_by_side_pairs_each_image_with_its_reference(cli, run_folder):
    r = cli("compare", run_folder, "--mode", "side-by-side", "--reference", "generation.steps=3", "-o", "-")
    assert r.code == 0, r.stderr
    import io

    from PIL import Image

    pairs = np.asarray(Image.open(io.BytesIO(r.stdout_bytes)).convert("RGB"))
    for rec in _records(run_folder):
        assert _contains(pairs, png(run_folder / rec["image"]))


def test_two_runs_compare_with_run_as_an_axis(cli, run_folder, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(run_folder, twin)
    r = cli(
        "compare",
        run_folder,
        twin,
        "--where",
        "seed=1",
        "--where",
        "generation.steps=2",
        "--rows",
        "run",
        "--cols",
        "scheduler.shift",
        "--reference",
        "run=c",
        "-o",
        "two.png",
    )
    assert r.code == 0, r.stderr
    rows = list(csv.DictReader(open("two.metrics.csv")))
    assert {row["run"] for row in rows} == {"c", "twin"} and {row["psnr"] for row in rows} == {"inf"}
    json.loads(Path("two.metrics.json").read_text(), parse_constant=_no_constants)  # strict JSON


def test_prompt_scores_from_a_tiny_siglip(cli, run_folder, tmp_path):
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from llmdit_cli.tiny import byte_tokenizer

    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(
            vocab_size=264,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
        ),
        vision_config=dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
        ),
    )
    folder = tmp_path / "siglip"
    model = SiglipModel(config).eval()
    model.save_pretrained(folder)
    tokenizer = byte_tokenizer()
    tokenizer.save_pretrained(folder)
    processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    processor.save_pretrained(folder)
    r = cli("compare", run_folder, "--where", "seed=1", "--score-model", folder, "-o", "s.png", "--metrics", "scores")
    assert r.code == 0, r.stderr
    rows = json.loads(Path("scores.json").read_text())
    assert len(rows) == 4
    from PIL import Image

    for row in rows:  # the same similarity, computed here from the model's own features
        text = tokenizer([row["prompt"]], padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        pixels = processor(images=Image.open(row["image"]).convert("RGB"), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = model(**text, pixel_values=pixels)
        expected = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
        assert math.isclose(row["score"], expected, rel_tol=1e-5, abs_tol=1e-6)
    bad = cli("compare", run_folder, "--score-model", tmp_path / "nothing")
    assert_one_line_error(bad, "--score-model", "cannot load a SigLIP/CLIP model")


def test_bad_input_is_one_line(cli, run_folder, tmp_path):
    (tmp_path / "plain").mkdir()
    assert_one_line_error(cli("compare", tmp_path / "plain"), "not a sweep run folder")
    assert_one_line_error(cli("compare", tmp_path / "plain", "--list"), "no sweep runs found")
    assert_one_line_error(
        cli("compare", run_folder, "--rows", "slg.scale"), "--rows slg.scale: not an axis the runs vary"
    )
    assert_one_line_error(cli("compare", run_folder, "--rows", "seed", "--cols", "seed"), "both seed")
    assert_one_line_error(cli("compare", run_folder, "--where", "seed=9"), "--where seed=9: no such value")
    assert_one_line_error(cli("compare", run_folder, "--mode", "diff"), "pass --reference")
    assert_one_line_error(cli("compare", run_folder, "--mode", "mosaic"), "--mode mosaic")
    assert_one_line_error(cli("compare", run_folder, "-o", "-"), "-o -: 2 grids cannot go to stdout")
    assert not list(Path(".").glob("*.png"))


def test_html_report_in_headless_chromium(cli, run_folder):
    r = cli(
        "compare",
        run_folder,
        "--rows",
        "scheduler.shift",
        "--cols",
        "generation.steps",
        "--reference",
        "generation.steps=2",
        "--html",
        "report.html",
        "-o",
        "grid-{index}.png",
    )
    assert r.code == 0, r.stderr
    text = Path("report.html").read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    driver = chromium()
    try:
        driver.get(Path("report.html").resolve().as_uri())
        tiles = driver.find_elements("css selector", "figure.tile img")
        assert len(tiles) == 8  # every cell, in two grids (one per seed)
        assert all(driver.execute_script("return arguments[0].naturalWidth", t) == 32 for t in tiles)
        assert "shift" in tiles[0].get_attribute("title")  # settings on hover
        # the slider moves the divider (from the middle)
        middle = "const d = document.getElementById('divider'); return parseFloat(getComputedStyle(d).left) / d.parentElement.clientWidth;"
        assert abs(driver.execute_script(middle) - 0.5) < 0.01
        driver.execute_script(
            "const s = document.getElementById('slider'); s.value = 20; s.dispatchEvent(new Event('input'));"
        )
        where = "const d = document.getElementById('divider'); return parseFloat(getComputedStyle(d).left) / d.parentElement.clientWidth;"
        assert abs(driver.execute_script(where) - 0.2) < 0.01
        clip = driver.execute_script("return getComputedStyle(document.getElementById('slider-a-clip')).width")
        assert clip == driver.find_element("id", "divider").value_of_css_property("left")  # A shows left of it
        # A/B toggle swaps the image
        driver.execute_script(
            "const p = document.getElementById('pick-b'); p.value = 5; p.dispatchEvent(new Event('change'));"
        )
        image = driver.find_element("id", "ab-image")
        a_src = image.get_attribute("src")
        driver.find_element("id", "ab-toggle").click()
        b_src = image.get_attribute("src")
        assert a_src != b_src and b_src == tiles[5].get_attribute("src")
        assert driver.find_element("id", "ab-label").text == "B"
        # the difference overlay draws |A - B| over the view
        driver.find_element("id", "diff-toggle").click()
        drawn = "const c = document.getElementById('diff'); return [c.hidden, c.width, c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0)];"
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 10).until(lambda d: d.execute_script(drawn)[1] == 32)
        assert driver.execute_script(drawn) == [False, 32, True]
        # click to enlarge, arrow to the next, Esc closes
        tiles[2].click()
        box = driver.find_element("id", "lightbox")
        assert box.is_displayed()
        assert driver.find_element("id", "lightbox-image").get_attribute("src") == tiles[2].get_attribute("src")
        from selenium.webdriver.common.keys import Keys

        driver.find_element("tag name", "body").send_keys(Keys.ARROW_RIGHT)
        assert driver.find_element("id", "lightbox-image").get_attribute("src") == tiles[3].get_attribute("src")
        driver.find_element("tag name", "body").send_keys(Keys.ESCAPE)
        assert not box.is_displayed()
    finally:
        driver.quit()


def _no_constants(name):
    raise AssertionError(f"not JSON: {name}")


def test_list_valued_axes_and_prompts_that_look_alike(cli, tmp_path):
    recipe = RECIPE.replace(
        "scheduler.shift = [1.0, 3.0]\ngeneration.steps = [2, 3]", "slg.layers = [[1], [1, 2]]\nslg.scale = [0.0, 2.0]"
    )
    recipe = recipe.replace(
        'prompts = ["a red circle on a blue background"]',
        'prompts = ["a red circle on a blue background, version one", "a red circle on a blue background, version two"]',
    )
    (tmp_path / "l.toml").write_text(recipe.replace("seeds = [1, 2]", "seeds = [1]"))
    assert cli("sweep", "l.toml", "-q").code == 0
    r = cli(
        "compare",
        "runs/l",
        "--rows",
        "slg.layers",
        "--cols",
        "slg.scale",
        "--reference",
        "slg.scale=0.0",
        "-o",
        "l-{index}.png",
        "--html",
        "l.html",
    )
    assert r.code == 0, r.stderr
    assert len(list(Path(".").glob("l-*.png"))) == 2  # one per prompt
    r = cli("compare", "runs/l", "--mode", "side-by-side", "--reference", "slg.scale=0.0", "-o", "pairs.png")
    assert r.code == 0, r.stderr
    for rec in _records(Path("runs/l")):  # both prompts' images are there, none replaced
        assert _contains(png("pairs.png"), png(Path("runs/l") / rec["image"]))


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for m in run.glob("manifest*.jsonl") for line in m.read_text().splitlines() if line]


def _contains(big: np.ndarray, small: np.ndarray) -> bool:
    """Whether `small` appears in `big` at some position, pixel for pixel."""
    h, w = small.shape[:2]
    for y in range(big.shape[0] - h + 1):
        rows = big[y : y + h]
        for x in range(big.shape[1] - w + 1):
            if rows[0, x, 0] == small[0, 0, 0] and np.array_equal(rows[:, x : x + w], small):
                return True
    return False
