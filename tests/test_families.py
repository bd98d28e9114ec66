"""Model families come from a folder's model_index.json, not from its name; settings reach the
commands through one registry of options."""

from __future__ import annotations

import json
import shutil

from helpers import assert_one_line_error


def shown(cli, model) -> dict:
    r = cli("config", "show", "--model", str(model), "--json")
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)["settings"]


def test_a_copy_of_the_demo_keeps_its_defaults_whatever_its_name(cli, tmp_path):
    from llmdit_cli.models import DEMO_PATH

    copy = tmp_path / "my-model"
    shutil.copytree(DEMO_PATH, copy)
    s = shown(cli, copy)
    assert s["generation.width"] == {"value": 32, "source": "model family demo"}


def test_a_name_that_says_turbo_does_not_choose_the_variant(cli, tmp_path, tiny_model):
    named = tmp_path / "z-image-turbo-lookalike"
    shutil.copytree(tiny_model, named)
    assert shown(cli, named)["scheduler.shift"] == {"value": None, "source": "model family z-image"}
    from llmdit_cli.families import mark_variant

    mark_variant(named, "z-image-turbo")
    assert shown(cli, named)["scheduler.shift"] == {"value": 3.0, "source": "model family z-image-turbo"}


def test_a_pipeline_of_no_registered_family_is_one_line(cli, tmp_path, tiny_model):
    other = tmp_path / "other"
    shutil.copytree(tiny_model, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "FluxPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    r = cli("generate", "x", "--model", str(other), "-o", "x.png")
    assert_one_line_error(r, f"--model {other}: a FluxPipeline pipeline", "ZImagePipeline", "QwenImageLayeredPipeline")
    assert not (tmp_path / "x.png").exists()


def test_a_model_of_another_family_names_the_command_that_runs_it(cli, tmp_path, tiny_model):
    other = tmp_path / "layered"
    shutil.copytree(tiny_model, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "QwenImageLayeredPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    r = cli("generate", "x", "--model", str(other), "-o", "x.png")
    assert_one_line_error(
        r, f"--model {other}: a qwen-image-layered model", "not one for text-to-image; `llmdit decompose` runs it"
    )
    r = cli("decompose", "x.png", "--layered-model", str(tiny_model), "-o", "out")
    # the input image is checked first
    assert_one_line_error(r, "x.png: no such file")


def test_every_setting_is_an_option_of_generate_and_img2img():
    import inspect

    from llmdit_cli.cli.generate import generate, img2img
    from llmdit_cli.cli.options import SETTING_OPTIONS
    from llmdit_cli.config import FLAG_KEY

    # The layer commands' settings (decompose, edit-layer) are theirs alone; so are rewrite's.
    layered = {f for f, k in FLAG_KEY.items() if k.startswith(("layered.", "rewriter."))}
    assert set(SETTING_OPTIONS) == {"model", *FLAG_KEY} - layered
    from llmdit_cli.config import GenerationSettings

    only_img2img = set(GenerationSettings.only_in)  # strength, mask: of the input image
    gen, i2i = (set(inspect.signature(c).parameters) for c in (generate, img2img))
    assert only_img2img == {"strength", "mask"}
    assert set(SETTING_OPTIONS) - only_img2img <= gen and not only_img2img & gen
    assert set(SETTING_OPTIONS) <= i2i


def test_the_image_record_follows_the_settings_sections():
    from llmdit_cli.config import SECTIONS, reapplied_fields, resolve_defaults

    record = resolve_defaults({"model": "demo"}).record("txt2img")
    machine = {"dtype", "device", "text_encoder_device", "dit_device", "vae_device"}
    for section, cls in SECTIONS.items():
        for name in cls.model_fields:
            flag = (
                name if not cls.flag_prefix else (cls.flag_prefix if name == "enabled" else f"{cls.flag_prefix}_{name}")
            )
            expected = (
                section not in ("encoder", "vl", "templates", "cache", "layered", "rewriter")
                and flag not in machine
                and flag not in ("strength", "mask", "batch_size")  # batch_size: the same pixels at any size
            )
            assert (flag in record) == expected, flag
    assert {"strength", "mask"} <= set(resolve_defaults({"model": "demo"}).record("img2img"))
    assert "attention_backend" in record and "attention_backend" not in reapplied_fields()
    assert {"step_cache", "step_cache_threshold"} <= set(reapplied_fields())  # it changes the pixels
    assert {"steps", "slg_layers", "dype_method", "loras", "model"} <= set(reapplied_fields())
