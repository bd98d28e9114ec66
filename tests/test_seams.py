"""The seams between generic code and the model families: model config keys are read only inside
`llmdit_cli/families/`, generic code reaches a family package only through the registry, every
runner has its protocol's functions, and `Limits` say what each tiny folder's configs say."""

from __future__ import annotations

import ast
import inspect
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "llmdit_cli"
# Keys of the Z-Image and Qwen-Image transformer and VAE configs (diffusers 0.42).
MODEL_CONFIG_KEYS = {
    "axes_lens",
    "axes_dims",
    "cap_feat_dim",
    "all_patch_size",
    "all_f_patch_size",
    "n_layers",
    "n_refiner_layers",
    "in_channels",
    "latent_channels",
    "block_out_channels",
    "scaling_factor",
    "shift_factor",
    "z_dim",
    "temperal_downsample",
    "joint_attention_dim",
    "latents_mean",
    "latents_std",
}
# Builders make models from configs (tests' tiny models, the demo's base model): they name the keys.
BUILDERS = {PACKAGE / "tiny.py", PACKAGE / "train" / "scratch.py"}


def config_key_uses(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line key` for every string constant or attribute named like a model config key."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value
        elif isinstance(node, ast.Attribute):
            name = node.attr
        if name in MODEL_CONFIG_KEYS:
            found.append(f"{path.relative_to(root)}:{node.lineno} {name}")
    return found


def generic_modules() -> list[Path]:
    families = PACKAGE / "families"
    return [p for p in sorted(PACKAGE.rglob("*.py")) if families not in p.parents and p not in BUILDERS]


def test_no_model_config_key_is_read_outside_the_family_packages():
    uses = [use for path in generic_modules() for use in config_key_uses(path)]
    assert not uses, "model config keys outside llmdit_cli/families/:\n" + "\n".join(uses)


def test_the_key_scan_finds_a_config_read(tmp_path):
    """The scan above sees the ways code reads a config key."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def f(handle, t):\n"
        "    a = handle.component_config('transformer').get('axes_lens')\n"
        "    b = t.config.cap_feat_dim\n"
        "    return a, b, t.config['n_layers']\n"
    )
    uses = config_key_uses(sample, tmp_path)
    assert sorted(u.split()[-1] for u in uses) == ["axes_lens", "cap_feat_dim", "n_layers"]


def test_a_direct_import_of_a_family_package_breaks_the_contract(tmp_path):
    """Generic code that imports a family package (not the registry) fails `lint-imports`."""
    copy = tmp_path / "proj"
    shutil.copytree(PACKAGE, copy / "llmdit_cli", ignore=shutil.ignore_patterns("assets", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    generic = copy / "llmdit_cli" / "workflows" / "jobs.py"
    generic.write_text(generic.read_text() + "\n\ndef _peek():\n    from llmdit_cli.families.zimage import runner\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(copy), str(ROOT / "tools")])}
    cmd = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]
    done = subprocess.run([*cmd, "--no-cache"], cwd=copy, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "only through the registry" in done.stdout and "BROKEN" in done.stdout
    assert "llmdit_cli.workflows.jobs -> llmdit_cli.families.zimage" in done.stdout


def protocol_functions(protocol) -> set[str]:
    return {n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")}


def test_every_runner_has_its_protocol():
    from llmdit_cli.families import REGISTRY
    from llmdit_cli.families.protocol import (
        FEATURE_PROTOCOLS,
        DecomposeRunner,
        EditRunner,
        Img2ImgRunner,
        Runner,
        TextToImageRunner,
    )

    by_task = {"text-to-image": TextToImageRunner, "layer decomposition": DecomposeRunner, "layer editing": EditRunner}
    for family in REGISTRY:
        code = family.code()
        wanted = protocol_functions(Runner) | protocol_functions(by_task[family.task])
        for feature in family.features & set(FEATURE_PROTOCOLS):
            wanted |= protocol_functions(FEATURE_PROTOCOLS[feature])
        missing = [n for n in sorted(wanted) if not callable(getattr(code, n, None))]
        assert not missing, f"{family.name} runner {family.runner} lacks {missing}"
    assert "encode_image" in protocol_functions(Img2ImgRunner)  # a feature's protocol adds its own


def test_a_family_with_loras_has_its_lora_keys():
    """The LoRA key mapping is the family's (`Family.lora_keys`, `protocol.LoraKeys`)."""
    from llmdit_cli.errors import UsageError
    from llmdit_cli.families import REGISTRY, by_name
    from llmdit_cli.families.protocol import LoraKeys

    for family in REGISTRY:
        if "lora" in family.features:
            keys = family.lora_code()
            missing = [n for n in sorted(protocol_functions(LoraKeys)) if not callable(getattr(keys, n, None))]
            assert not missing, f"{family.name}: {family.lora_keys} lacks {missing}"
    with pytest.raises(UsageError, match="qwen-image models .* do not take LoRAs"):
        by_name("qwen-image").lora_code()


def test_limits_of_a_z_image_folder_come_from_its_configs(tiny_model):
    """The tiny folder: axes_lens [256, 32, 32] -> 224 caption tokens (axes_lens[0] - 32), 3 blocks,
    patch 2 over an 8x VAE -> 16 px per token, 32 tokens -> 512 px covered."""
    from llmdit_cli.models import ModelHandle

    lim = ModelHandle(str(tiny_model)).limits()
    assert (lim.caption_tokens, lim.text_hidden_size, lim.text_hidden_states) == (224, 32, 3)
    assert (lim.channels, lim.patch_size, lim.vae_scale_factor, lim.token_pixels) == (16, 2, 8, 16)
    assert (lim.trained_size, lim.blocks, lim.size_multiple) == (512, 3, 16)


@pytest.mark.parametrize("kind", ["edit"])
def test_limits_of_a_qwen_image_folder_come_from_its_configs(tmp_path, kind):
    from llmdit_cli.models import ModelHandle
    from llmdit_cli.tiny import QWEN_HIDDEN, save_qwen_image

    lim = ModelHandle(str(save_qwen_image(kind, tmp_path / kind))).limits()
    assert lim.text_hidden_size == QWEN_HIDDEN and lim.caption_tokens is None and lim.trained_size is None
    assert (lim.channels, lim.patch_size, lim.vae_scale_factor, lim.blocks) == (16, 2, 16, 2)
    assert lim.text_hidden_states == 3 and lim.size_multiple == 32


def test_a_family_without_a_feature_refuses_its_setting():
    from llmdit_cli.errors import UsageError
    from llmdit_cli.families import FEATURES, Family, by_name, check_feature

    bare = Family("bare", ("BarePipeline",), {"v": {}}, "v", "llmdit_cli.families.zimage.runner")
    with pytest.raises(UsageError, match=r"slg\.enabled.*bare models \(some/model\) do not take skip-layer guidance"):
        check_feature(bare, "slg", "slg.enabled", "some/model")
    for feature in FEATURES:
        check_feature(by_name("z-image"), feature, "model", "demo")  # Z-Image offers every one


def test_guidance_settings_a_family_leaves_unset_are_off():
    """A family with no SLG defaults leaves slg.* unset: that is SLG off, not an error."""
    from llmdit_cli.config import SlgSettings
    from llmdit_cli.guidance.slg import SLGConfig

    off = SLGConfig.from_settings(SlgSettings())
    assert (off.enabled, off.scale, off.start, off.stop) == (False, 0.0, 0.0, 1.0)


def test_commands_are_plain_functions_that_take_every_setting_option():
    """`generate` and `img2img` declare their parameters (no synthesized `__signature__`), and
    none of the registered setting options is left out."""
    from llmdit_cli.cli.generate import generate, img2img
    from llmdit_cli.cli.options import SETTING_OPTIONS

    for command, not_taken in ((generate, {"strength", "mask"}), (img2img, set())):
        taken = set(inspect.signature(command).parameters)
        assert set(SETTING_OPTIONS) - not_taken <= taken, set(SETTING_OPTIONS) - not_taken - taken
    assert "strength" in inspect.signature(img2img).parameters
    offenders = [str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if "__signature__" in p.read_text()]
    assert not offenders, offenders


def test_settings_beyond_the_model_are_refused_before_a_weight_loads(cli, monkeypatch):
    """One check (`workflows.beyond_limits`) for requests and sweeps, from the configs alone."""
    from helpers import assert_one_line_error

    from llmdit_cli.models import ModelHandle

    def no_loading(self, *needed):
        raise AssertionError(f"loaded {needed} before the settings were checked")

    monkeypatch.setattr(ModelHandle, "pipeline", no_loading)
    r = cli("encode", "a cat", "--model", "demo", "--hidden-layer", 5, "-o", "e.safetensors")
    assert_one_line_error(r, "--hidden-layer 5", "3 hidden states (valid: -3..2)")
    r = cli("generate", "a cat", "--model", "demo", "--slg", "--slg-layers", "1,9", "-o", "x.png")
    assert_one_line_error(r, "--slg-layers 9", "4 layers (indices 0-3)")
    r = cli("generate", "a cat", "--model", "demo", "--caption-length", 5000, "-o", "x.png")
    assert_one_line_error(r, "--caption-length 5000", "--model demo takes at most 992 caption tokens")


def test_beyond_limits_lists_every_setting_a_model_cannot_take():
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.models import ModelHandle
    from llmdit_cli.workflows import beyond_limits

    lim = ModelHandle("demo").limits()
    fits = resolve_defaults({"hidden_layer": -3, "slg": True, "slg_layers": [0, 3], "caption_length": 992})
    assert beyond_limits(fits.settings, lim) == []
    off = resolve_defaults({"slg_layers": [7]})  # SLG off: its layers need not fit
    assert beyond_limits(off.settings, lim) == []
    r = resolve_defaults({"hidden_layer": 3, "slg_scale": 1.0, "slg_layers": [2, 4, 5], "caption_length": 993})
    found = {(b.key, b.value) for b in beyond_limits(r.settings, lim)}
    assert found == {("encoder.hidden_layer", 3), ("slg.layers", "4,5"), ("encoder.caption_length", 993)}


def test_a_field_constraint_holds_for_every_front_end(cli, tmp_path, monkeypatch):
    """`encoder.max_length >= 1` is declared once, on the settings field: a flag, a config file and
    an environment variable are all refused by it, in one line, before any model opens."""
    from helpers import assert_one_line_error

    args = ("encode", "a cat", "--model", "demo", "-o", "e.safetensors")
    assert_one_line_error(cli(*args, "--max-length", 0), "--max-length 0: must be greater than or equal to 1")
    config = tmp_path / "c.toml"
    config.write_text("[default.encoder]\nmax_length = 0\n")
    assert_one_line_error(
        cli(*args, "--config", config), "bad value for 'encoder.max_length' (0): must be greater than or equal to 1"
    )
    monkeypatch.setenv("LLMDIT_ENCODER_MAX_LENGTH", "-4")
    assert_one_line_error(cli(*args), "LLMDIT_ENCODER_MAX_LENGTH", "must be greater than or equal to 1")
    assert not (tmp_path / "e.safetensors").exists()


def test_the_plan_is_frozen_and_preparing_makes_a_new_one():
    """Settings resolve once into a frozen plan; `Engine.prepare` fills the family's defaults into
    a new plan (with their provenance) and leaves the caller's request as it was."""
    from llmdit_cli.config import resolve
    from llmdit_cli.engine import Engine, GenerateRequest

    plan = resolve(flags={"model": "demo", "steps": 3})
    with pytest.raises(AttributeError):
        plan.prepared = True
    with pytest.raises(TypeError):
        plan.values["generation.steps"] = 9  # type: ignore[index]
    req = GenerateRequest(plan, seeds=[1], prompts=["a cat"])
    engine = Engine()
    ready = engine.prepare(req)
    assert req.settings is plan and plan.generation.width is None and not plan.prepared
    assert ready.settings.prepared and ready.settings.generation.width == 32  # the demo family's
    assert ready.settings.sources["generation.width"] == "model family demo"
    assert ready.settings.generation.steps == 3 and ready.settings.sources["generation.steps"] == "flag"
    assert engine.prepare(ready) is ready


def test_help_takes_defaults_and_choices_from_the_settings_fields():
    """`--help` says a setting's default and choices as config.py has them (through the generated
    `cli/setting_facts.py`, since `--help` must not import pydantic)."""
    from llmdit_cli.cli.options import help_with_facts
    from llmdit_cli.cli.setting_facts import FACTS
    from llmdit_cli.config import EncoderSettings, setting_facts

    assert FACTS == setting_facts(), "stale: run python scripts/gen_setting_facts.py"
    fill = EncoderSettings.model_fields["caption_fill"]
    text = help_with_facts("caption_fill", "{choices} (default {default})")
    assert text.endswith(f"or filler_repeat (default {fill.default})") and text.startswith("content_only, ")
    assert help_with_facts("cache", "default {default}") == "default on"


def test_encoding_checks_only_what_encoding_uses(cli, monkeypatch):
    """SLG blocks from the environment are the generation's business, not `encode`'s."""
    monkeypatch.setenv("LLMDIT_SLG_LAYERS", "99")
    monkeypatch.setenv("LLMDIT_SLG_ENABLED", "true")
    r = cli("encode", "a cat", "--model", "demo", "-o", "e.safetensors")
    assert r.code == 0, r.stderr


def test_img2img_rounds_an_input_to_the_size_the_model_takes(cli):
    """A 40x40 input on the demo (sides multiples of 16) becomes 32x32, as before the seams."""
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save("in.png")
    r = cli("img2img", "a red circle", "--image", "in.png", "--model", "demo", "--seed", 1, "-o", "out.png")
    assert r.code == 0, r.stderr
    assert Image.open("out.png").size == (32, 32)


def test_request_field_names_are_the_servers_own():
    """The server names a setting in requests and errors by its own schema (`PUBLIC_NAMES` over the
    setting's flag name), not by reading the CLI's option declarations."""
    from llmdit_cli.serve.settings import ServerSettings

    names = ServerSettings({})
    assert (names.field_name("lora.loras"), names.field_name("generation.steps")) == ("llmdit.lora", "llmdit.steps")
    assert names.field_name("generation.width") == "size (width)"


def test_the_servers_help_texts_are_the_clis():
    """`setting_help.py` (the studio's help texts and panels, which must not import the CLI) is
    what `scripts/gen_setting_facts.py` makes from the CLI's options now."""
    import importlib.util

    from llmdit_cli.setting_help import HELP, PANELS

    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_setting_facts.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    table, panels = gen.option_help()
    assert (HELP, PANELS) == (table, panels), "stale: run python scripts/gen_setting_facts.py"
    assert HELP["slg_scale"]["panel"] == "Skip-layer guidance" and "SLG strength" in HELP["slg_scale"]["help"]
