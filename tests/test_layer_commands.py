"""decompose / edit-layer / decode of layered latents on tiny Qwen-Image-Layered and Edit-Plus
folders built from configs (llmdit_cli.tiny), against diffusers' stock pipelines on the same folders."""

import fcntl
import hashlib
import json
import shutil
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import assert_one_line_error

STEPS = 2  # the real scheduler config divides 0/0 at 1 step (DESIGN.md §4)


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run by one pytest-xdist worker; the others wait for it and share the folder
    (a worker's base temp folder is inside the run's; without xdist the run's is its own)."""
    import os

    base = Path(tmp_path_factory.getbasetemp())
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not (root / ".done").exists():
            build(root)
            (root / ".done").touch()
    return root


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """Tiny layered and edit folders, and a source image."""
    root = built_once(tmp_path_factory, "qwen-models", make_models)
    return {"layered": root / "layered", "edit": root / "edit", "image": root / "img.png"}


def make_models(root):
    from llmdit_cli.tiny import save_qwen_image

    a = np.zeros((96, 128, 4), np.uint8)
    a[..., 3] = 255
    a[..., :3] = [30, 60, 200]
    a[20:70, 30:90, :3] = [220, 40, 40]
    Image.fromarray(a, "RGBA").save(root / "img.png")
    save_qwen_image("layered", root / "layered", seed=3)
    save_qwen_image("edit", root / "edit", seed=4)


@pytest.fixture(scope="module")
def decomposed(qwen, tmp_path_factory):
    """`llmdit decompose` run once (with --save-latents); tests copy the folder before changing it."""
    return built_once(tmp_path_factory, "qwen-decomposed", lambda root: decompose_into(root, qwen))


def decompose_into(root, qwen):
    from typer.testing import CliRunner

    from llmdit_cli.cli.app import app

    args = ["decompose", qwen["image"], "--layers", "3", "-o", root / "layers", "--layered-model", qwen["layered"]]
    args += [
        "--steps",
        STEPS,
        "--seed",
        "11",
        "--prompt",
        "a red box on blue",
        "--save-latents",
        root / "l.safetensors",
    ]
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.stdout, result.stderr)


def copy_of(decomposed, tmp_path):
    return shutil.copytree(decomposed / "layers", tmp_path / "layers")


def rgba(path):
    with Image.open(path) as im:
        assert im.mode == "RGBA", (path, im.mode)
        return np.asarray(im).copy()


def test_decompose_writes_rgba_layers_a_composite_and_the_record(decomposed, qwen):
    folder = decomposed / "layers"
    record = json.loads((folder / "layers.json").read_text())
    layers = [rgba(folder / f"layer_{i:02d}.png") for i in range(3)]
    assert sorted(p.name for p in folder.iterdir()) == [
        "composite.png",
        "layer_00.png",
        "layer_01.png",
        "layer_02.png",
        "layers.json",
    ]
    assert len({a.shape for a in layers}) == 1 and layers[0].shape[2] == 4
    assert record["size"] == [layers[0].shape[1], layers[0].shape[0]]
    assert record["order"] == [0, 1, 2] and record["hidden"] == [] and record["edits"] == []
    s = record["settings"]
    assert (s["layers"], s["steps"], s["seed"], s["resolution"], s["cfg_normalize"]) == (3, STEPS, 11, 640, True)
    assert (s["true_cfg_scale"], s["negative_prompt"], s["prompt"], s["captioned"]) == (
        4.0,
        " ",
        "a red box on blue",
        False,
    )
    assert s["model"] == str(qwen["layered"])
    src = record["source"]
    assert src["sha256"] == hashlib.sha256(qwen["image"].read_bytes()).hexdigest() and src["size"] == [128, 96]
    from llmdit_cli import __version__

    assert record["llmdit_version"] == __version__
    # the composite is the layers alpha-composited bottom first (PIL's alpha_composite)
    expected = Image.new("RGBA", (record["size"][0], record["size"][1]))
    for a in layers:
        expected = Image.alpha_composite(expected, Image.fromarray(a, "RGBA"))
    assert np.array_equal(rgba(folder / "composite.png"), np.asarray(expected))


def test_decompose_matches_the_stock_pipeline(decomposed, qwen):
    import torch
    from diffusers import QwenImageLayeredPipeline

    pipe = QwenImageLayeredPipeline.from_pretrained(qwen["layered"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(qwen["image"]).convert("RGBA")
    out = pipe(
        image,
        "a red box on blue",
        negative_prompt=" ",
        true_cfg_scale=4.0,
        layers=3,
        num_inference_steps=STEPS,
        resolution=640,
        cfg_normalize=True,  # the model card's, llmdit's default
        generator=torch.Generator().manual_seed(11),
    ).images[0]
    assert len(out) == 3
    for i, layer in enumerate(out):
        assert np.array_equal(np.asarray(layer), rgba(decomposed / "layers" / f"layer_{i:02d}.png")), i


def test_layered_latents_decode_to_the_same_folder(decomposed, cli, tmp_path):
    from llmdit_cli.artifacts import read_stage

    stage = read_stage(str(decomposed / "l.safetensors"))
    assert stage.kind == "layered-latents" and stage.meta_int("layers") == 3
    assert stage.shapes["latents"][:3] == [1, 16, 4]  # the model's own composite frame first
    r = cli("decode", decomposed / "l.safetensors", "-o", tmp_path / "again")
    assert r.code == 0, r.stderr
    for name in ["layer_00.png", "layer_01.png", "layer_02.png", "composite.png"]:
        assert np.array_equal(rgba(tmp_path / "again" / name), rgba(decomposed / "layers" / name)), name
    a = json.loads((tmp_path / "again" / "layers.json").read_text())
    b = json.loads((decomposed / "layers" / "layers.json").read_text())
    assert a == b
    # a layered latents file is not img2img's
    r = cli("img2img", "x", "--from-latents", decomposed / "l.safetensors", "--model", "demo")
    assert_one_line_error(r, "holds layered-latents, but latents are expected here", "llmdit decode")


class CountCalls:
    """Counts the forward calls of every QwenImage transformer (a global module hook)."""

    def __enter__(self):
        import torch
        from diffusers import QwenImageTransformer2DModel

        self.calls = 0

        def hook(module, args, output):
            if isinstance(module, QwenImageTransformer2DModel):
                self.calls += 1

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_edit_layer_runs_true_cfg_keeps_alpha_and_versions_and_matches_stock(decomposed, qwen, cli, tmp_path):
    import torch
    from diffusers import QwenImageEditPlusPipeline

    folder = copy_of(decomposed, tmp_path)
    before = rgba(folder / "layer_01.png")
    with CountCalls() as count:
        r = cli(
            "edit-layer",
            folder,
            "--layer",
            "1",
            "make it blue",
            "--edit-model",
            qwen["edit"],
            "--steps",
            STEPS,
            "--seed",
            "5",
        )
    assert r.code == 0, r.stderr
    assert count.calls == 2 * STEPS  # conditional and negative pass each step: true CFG ran
    after = rgba(folder / "layer_01.png")
    assert np.array_equal(after[..., 3], before[..., 3])  # alpha put back exactly
    assert not np.array_equal(after[..., :3], before[..., :3])
    assert np.array_equal(rgba(folder / "layer_01.v1.png"), before)  # the old version kept
    record = json.loads((folder / "layers.json").read_text())
    assert record["layers"][1]["versions"] == ["layer_01.v1.png"]
    (edit,) = record["edits"]
    assert (edit["layer"], edit["instruction"], edit["seed"], edit["steps"], edit["kept"]) == (
        1,
        "make it blue",
        5,
        STEPS,
        "layer_01.v1.png",
    )
    assert (edit["true_cfg_scale"], edit["negative_prompt"], edit["model"]) == (4.0, " ", str(qwen["edit"]))
    layers = [Image.open(folder / f"layer_{i:02d}.png") for i in range(3)]
    composite = Image.alpha_composite(Image.alpha_composite(layers[0], layers[1]), layers[2])
    assert np.array_equal(rgba(folder / "composite.png"), np.asarray(composite))  # rebuilt

    # the stock pipeline on the same RGB, prompt and seed gives the same colours
    pipe = QwenImageEditPlusPipeline.from_pretrained(qwen["edit"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    rgb = Image.fromarray(before).convert("RGB")
    stock = pipe(
        image=[rgb],
        prompt="make it blue",
        negative_prompt=" ",
        true_cfg_scale=4.0,
        num_inference_steps=STEPS,
        width=rgb.width,
        height=rgb.height,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert np.array_equal(np.asarray(stock), after[..., :3])

    # a second edit keeps the first edit's file as .v2; without CFG the transformer runs once a step
    with CountCalls() as count:
        r = cli(
            "edit-layer",
            folder,
            "--layer",
            "1",
            "make it green",
            "--edit-model",
            qwen["edit"],
            "--steps",
            STEPS,
            "--true-cfg-scale",
            "1",
        )
    assert r.code == 0, r.stderr
    assert count.calls == STEPS
    assert np.array_equal(rgba(folder / "layer_01.v2.png"), after)
    assert json.loads((folder / "layers.json").read_text())["layers"][1]["versions"] == [
        "layer_01.v1.png",
        "layer_01.v2.png",
    ]


def test_order_hide_show_and_recompose(decomposed, cli, tmp_path):
    folder = copy_of(decomposed, tmp_path)
    layers = [Image.open(folder / f"layer_{i:02d}.png") for i in range(3)]
    r = cli("edit-layer", folder, "--order", "2,0,1", "--hide", "0")
    assert r.code == 0, r.stderr
    record = json.loads((folder / "layers.json").read_text())
    assert record["order"] == [2, 0, 1] and record["hidden"] == [0]
    assert np.array_equal(
        rgba(folder / "composite.png"),
        np.asarray(
            Image.alpha_composite(Image.alpha_composite(Image.new("RGBA", layers[0].size), layers[2]), layers[1])
        ),
    )
    r = cli("edit-layer", folder, "--show", "0")
    assert r.code == 0 and json.loads((folder / "layers.json").read_text())["hidden"] == []
    # --recompose alone rebuilds a composite that was lost
    (folder / "composite.png").unlink()
    r = cli("edit-layer", folder, "--recompose")
    assert r.code == 0, r.stderr
    expected = Image.new("RGBA", layers[0].size)
    for i in (2, 0, 1):
        expected = Image.alpha_composite(expected, layers[i])
    assert np.array_equal(rgba(folder / "composite.png"), np.asarray(expected))


def test_export_ora_and_tiff_read_back(decomposed, cli, tmp_path):
    folder = copy_of(decomposed, tmp_path)
    layers = [rgba(folder / f"layer_{i:02d}.png") for i in range(3)]
    r = cli("edit-layer", folder, "--order", "1,2,0", "--hide", "2", "--export", "ora", "-o", tmp_path / "art.ora")
    assert r.code == 0, r.stderr
    with zipfile.ZipFile(tmp_path / "art.ora") as z:
        first = z.infolist()[0]
        assert first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED
        assert z.read("mimetype") == b"image/openraster"
        import xml.etree.ElementTree as ET

        root = ET.fromstring(z.read("stack.xml"))
        assert (root.get("w"), root.get("h")) == (str(layers[0].shape[1]), str(layers[0].shape[0]))
        entries = root.find("stack").findall("layer")
        assert [e.get("src") for e in entries] == [
            "data/layer_00.png",
            "data/layer_02.png",
            "data/layer_01.png",
        ]  # top first
        assert [e.get("visibility") for e in entries] == ["visible", "hidden", "visible"]
        for e in entries:
            i = int(e.get("src")[-6:-4])
            assert np.array_equal(np.asarray(Image.open(BytesIO(z.read(e.get("src"))))), layers[i])
        merged = np.asarray(Image.open(BytesIO(z.read("mergedimage.png"))))
        assert np.array_equal(merged, rgba(folder / "composite.png"))
        assert max(Image.open(BytesIO(z.read("Thumbnails/thumbnail.png"))).size) <= 256
    r = cli("edit-layer", folder, "--export", "tiff")
    assert r.code == 0, r.stderr
    with Image.open(folder / "layers.tiff") as tif:
        assert tif.n_frames == 2  # the visible layers, bottom first
        pages = []
        for k in range(tif.n_frames):
            tif.seek(k)
            pages.append(np.asarray(tif.convert("RGBA")).copy())
    assert np.array_equal(pages[0], layers[1]) and np.array_equal(pages[1], layers[0])


def snapshot(folder):
    """Every file but the (empty) lock file an edit leaves for the next one."""
    from llmdit_cli.layerstack import LOCK_FILE

    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != LOCK_FILE}


def test_bad_input_is_one_line_and_nothing_is_written(decomposed, qwen, cli, tmp_path):
    folder = copy_of(decomposed, tmp_path)
    before = snapshot(folder)
    img, layered = qwen["image"], qwen["layered"]
    for args, needles in [
        (["decompose", img, "--layers", "11", "--layered-model", layered], ["--layers", "less than or equal to 10"]),
        (["decompose", img, "--layers", "1", "--layered-model", layered], ["--layers", "greater than or equal to 2"]),
        (["decompose", img, "--resolution", "800", "--layered-model", layered], ["--resolution", "640 or 1024"]),
        (["decompose", tmp_path / "nope.png", "--layered-model", layered], ["nope.png: no such file"]),
        (["decompose", folder / "layers.json", "--layered-model", layered], ["layers.json: not an image"]),
        (["decompose", img, "-o", folder, "--layered-model", layered], ["already holds layers"]),
        (
            ["decompose", img, "--layered-model", qwen["edit"]],
            ["--layered-model", "not one for layer decomposition", "`llmdit edit-layer` runs it"],
        ),
        (["decompose", img, "--layered-model", tmp_path / "none"], ["--layered-model", "no such folder"]),
        (["edit-layer", tmp_path, "--recompose"], ["no layers.json"]),
        (["edit-layer", folder, "--layer", "3", "x", "--edit-model", qwen["edit"]], ["--layer 3", "layers 0 to 2"]),
        (["edit-layer", folder, "--layer", "1"], ["needs both --layer N and an instruction"]),
        (["edit-layer", folder], ["nothing to do"]),
        (["edit-layer", folder, "--order", "0,0,1"], ["--order 0,0,1", "exactly once"]),
        (["edit-layer", folder, "--hide", "7"], ["--hide 7"]),
        (["edit-layer", folder, "--hide", "1", "--show", "1"], ["--hide 1 and --show 1"]),
        (["decompose", img, "-o", ".", "--layered-model", layered], ["-o .", "not the current one"]),
        (["edit-layer", folder, "--export", "psd"], ["--export psd"]),
        (
            ["edit-layer", folder, "--layer", "1", "x", "--edit-model", layered],
            ["--edit-model", "not one for layer editing", "`llmdit decompose` runs it"],
        ),
    ]:
        r = cli(*args)
        assert_one_line_error(r, *needles)
        assert snapshot(folder) == before, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers"]  # no output folder appeared
    assert not list(tmp_path.parent.glob(".*.tmp"))

    # a layer that is not an image
    (folder / "layer_02.png").write_bytes(b"not a png")
    before = snapshot(folder)
    r = cli("edit-layer", folder, "--layer", "2", "x", "--edit-model", qwen["edit"], "--steps", STEPS)
    assert_one_line_error(r, "layer_02.png: not a readable image")
    r = cli("edit-layer", folder, "--recompose")
    assert_one_line_error(r, "layer_02.png: not a readable image")
    assert snapshot(folder) == before
    # a broken layers.json
    (folder / "layers.json").write_text("{")
    assert_one_line_error(cli("edit-layer", folder, "--recompose"), "layers.json: not valid JSON")


def test_an_edit_while_the_folder_is_locked_is_refused(decomposed, qwen, cli, tmp_path):
    from llmdit_cli.layerstack import LOCK_FILE

    folder = copy_of(decomposed, tmp_path)
    with open(folder / LOCK_FILE, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = snapshot(folder)
        r = cli("edit-layer", folder, "--layer", "1", "make it blue", "--edit-model", qwen["edit"], "--steps", STEPS)
        assert_one_line_error(r, "another llmdit is changing these layers")
        assert_one_line_error(cli("edit-layer", folder, "--recompose"), "another llmdit")
        assert snapshot(folder) == before


def test_a_failed_load_leaves_the_folder_as_it_was(decomposed, qwen, cli, tmp_path):
    folder = copy_of(decomposed, tmp_path)
    broken = shutil.copytree(qwen["edit"], tmp_path / "broken")
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    before = snapshot(folder)
    r = cli("edit-layer", folder, "--layer", "1", "make it blue", "--edit-model", broken, "--steps", STEPS)
    assert_one_line_error(r, f"--edit-model {broken}: cannot load")
    assert snapshot(folder) == before
    r = cli("decompose", qwen["image"], "--layered-model", tmp_path / "broken", "-o", tmp_path / "out")
    assert_one_line_error(r, "--layered-model")
    assert not (tmp_path / "out").exists()


def test_record_checks_and_order_parsing(tmp_path):
    from llmdit_cli.errors import InputError, UsageError
    from llmdit_cli.layerstack import new_record, parse_order, read_stack

    assert parse_order("2,0,1", 3) == [2, 0, 1]
    with pytest.raises(UsageError):
        parse_order("0,1", 3)
    record = new_record(2, (32, 32), {}, {}, "0")
    for change, needle in [
        (dict(kind="other"), "not a layer record"),
        (dict(format=99), "upgrade llmdit"),
        (dict(order=[0, 0]), '"order"'),
        (dict(order=["a", 1]), '"order"'),
        (dict(order=[True, 0]), '"order"'),
        (dict(layers=[{"file": "../x.png"}, {"file": "b.png"}]), "inside the folder"),
        (dict(size=[32]), '"size"'),
    ]:
        (tmp_path / "layers.json").write_text(json.dumps({**record, **change}))
        with pytest.raises(InputError, match=needle.replace('"', ".").replace("(", ".").replace(")", ".")):
            read_stack(str(tmp_path))


def test_a_layer_off_the_pipeline_grid_keeps_its_size_and_exact_alpha(qwen, cli, tmp_path):
    """A hand-made stack of 72x40 (the tiny edit model renders on a 32-pixel grid: 64x32): the
    edited colours are resized back to the layer, the alpha is the original's."""
    from llmdit_cli.layerstack import new_record, write_new_folder

    rng = np.random.default_rng(0)
    layers = [Image.fromarray(rng.integers(0, 256, (40, 72, 4), dtype=np.uint8), "RGBA") for _ in range(2)]
    folder = write_new_folder(str(tmp_path / "odd"), layers, new_record(2, (72, 40), {}, {}, "test"))
    r = cli("edit-layer", folder, "--layer", "0", "make it blue", "--edit-model", qwen["edit"], "--steps", STEPS)
    assert r.code == 0, r.stderr
    after = rgba(folder / "layer_00.png")
    assert after.shape == (40, 72, 4)
    assert np.array_equal(after[..., 3], np.asarray(layers[0])[..., 3])
    assert not np.array_equal(after[..., :3], np.asarray(layers[0])[..., :3])


def test_the_layer_commands_read_their_own_settings(tmp_path, monkeypatch, cli):
    """[generation] steps and a LoRA kept for Z-Image never reach the layer models; [layered]
    and LLMDIT_LAYERED_* do, and their errors name the commands' own options."""
    from llmdit_cli.cli.layers_cmd import _layer_settings

    (tmp_path / "c.toml").write_text(
        '[default.generation]\nsteps = 8\nnegative_prompt = "blurry"\n[default.lora]\nloras = ["z.safetensors"]\n'
        '[default.layered]\nsteps = 30\nedit_model = "Qwen/Qwen-Image-Edit-2511"\n'
    )
    r = _layer_settings(str(tmp_path / "c.toml"), None, "layered.edit_model", {})
    s = r.settings
    assert (s.model, s.layered.steps, s.layered.negative_prompt, s.lora.loras) == (
        "Qwen/Qwen-Image-Edit-2511",
        30,
        " ",
        [],
    )
    monkeypatch.setenv("LLMDIT_LAYERED_STEPS", "12")
    assert _layer_settings(str(tmp_path / "c.toml"), None, "layered.model", {}).settings.layered.steps == 12
    assert_one_line_error(cli("decompose", "x.png", "--steps", "0"), "--steps", "greater than or equal to 1")


def test_an_edit_that_fails_to_save_its_record_puts_everything_back(decomposed, tmp_path, monkeypatch):
    from PIL import Image

    from llmdit_cli.layerstack import Stack, read_stack, replace_layer

    folder = copy_of(decomposed, tmp_path)
    before = snapshot(folder)
    stack = read_stack(str(folder))

    def full_disk(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Stack, "save_record", full_disk)
    with pytest.raises(OSError):
        replace_layer(stack, 1, Image.new("RGBA", stack.size, (0, 0, 255, 255)), {"instruction": "x"})
    assert snapshot(folder) == before
    assert stack.record["layers"][1]["versions"] == [] and stack.record["edits"] == []


def test_model_offload_is_the_default_on_cuda_only(qwen, monkeypatch, tmp_path):
    """The layer models take `--cpu-offload model` on CUDA where nothing set the offload; a value
    from the config (or a flag) stays, and off CUDA nothing changes."""
    from llmdit_cli import workflows as wf
    from llmdit_cli.cli.layers_cmd import _layer_settings
    from llmdit_cli.engine import Engine

    def prepared(cuda: bool, config: str | None = None):
        monkeypatch.setattr(wf.plan, "_uses_cuda", lambda r: cuda)
        r = _layer_settings(config, None, "layered.model", {}, layered_model=str(qwen["layered"]))
        engine = Engine()
        handle, _, r = engine.prepare_layers(r, "layer decomposition")
        assert engine.model(r, "layer decomposition")[0] is handle  # one handle, under the filled settings
        return r, handle

    r, handle = prepared(cuda=True)
    assert r.settings.optimization.cpu_offload == handle.placement.cpu_offload == "model"
    assert "on CUDA" in r.sources["optimization.cpu_offload"]
    assert (r.settings.layered.steps, r.settings.layered.layers, r.settings.layered.cfg_normalize) == (50, 4, True)
    r, handle = prepared(cuda=False)
    assert r.settings.optimization.cpu_offload == handle.placement.cpu_offload == "none"
    (tmp_path / "c.toml").write_text('[default.optimization]\ncpu_offload = "none"\n')
    r, handle = prepared(cuda=True, config=str(tmp_path / "c.toml"))
    assert r.settings.optimization.cpu_offload == handle.placement.cpu_offload == "none"


def test_inspect_shows_a_layer_folder_record(decomposed, cli):
    r = cli("inspect", decomposed / "layers", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout) == json.loads((decomposed / "layers" / "layers.json").read_text())
    r = cli("inspect", decomposed / "layers")
    assert r.code == 0 and "llmdit-layers" in r.stdout and "a red box on blue" in r.stdout


def test_layers_auto_counts_the_images_colour_regions(qwen, cli, tmp_path):
    from PIL import ImageDraw

    from llmdit_cli.families.qwenimage.layered import auto_layers

    flat = Image.new("RGBA", (64, 64), (40, 80, 200, 255))
    assert auto_layers(flat) == 2  # one region: the fewest layers the model makes
    shapes = flat.copy()
    draw = ImageDraw.Draw(shapes)
    for box, colour in (((4, 4, 24, 24), "red"), ((30, 30, 60, 50), "yellow"), ((4, 40, 20, 60), "green")):
        draw.rectangle(box, fill=colour)
    assert auto_layers(shapes) == 4  # three shapes on a background
    cutout = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(cutout).ellipse((8, 8, 56, 56), fill=(200, 30, 30, 255))
    assert auto_layers(cutout) == 2  # a shape on nothing
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 4), dtype=np.uint8))
    assert auto_layers(noise) == 8  # at most 8
    folder = tmp_path / "auto"
    args = ["--layered-model", qwen["layered"], "--steps", STEPS, "--seed", "1", "--prompt", "a red box on blue"]
    r = cli("decompose", qwen["image"], "--layers", "auto", "-o", folder, *args)
    assert r.code == 0, r.stderr
    record = json.loads((folder / "layers.json").read_text())
    expected = auto_layers(Image.open(qwen["image"]))
    assert record["settings"]["layers"] == expected == len(record["layers"]) and record["settings"]["layers_auto"]
    assert_one_line_error(cli("decompose", qwen["image"], "--layers", "many", *args), "--layers many", "or auto")
    assert_one_line_error(
        cli("decompose", qwen["image"], "--layers", "11", *args), "--layers 11", "less than or equal to 10"
    )
