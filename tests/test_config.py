"""Settings layering: defaults < config profile < LLMDIT_* env < flags, with validation."""

import json
import shutil
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from llmdit_cli.config import resolve
from llmdit_cli.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"


def write(tmp_path, text):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_layers_in_order(tmp_path, monkeypatch):
    cfg = write(
        tmp_path,
        "[default.generation]\nsteps = 5\nwidth = 512\nheight = 256\n[fast.generation]\nsteps = 2\nwidth = 128\n",
    )
    r = resolve(cfg, "fast", {})
    assert (r["steps"], r["width"], r["height"]) == (2, 128, 256)
    assert r.sources["generation.height"].endswith("[default]") and r.sources["generation.steps"].endswith("[fast]")
    monkeypatch.setenv("LLMDIT_GENERATION_WIDTH", "64")
    r = resolve(cfg, "fast", {})
    assert r["width"] == 64 and r.sources["generation.width"] == "LLMDIT_GENERATION_WIDTH"
    r = resolve(cfg, "fast", {"width": 32, "steps": None})
    assert r["width"] == 32 and r.sources["generation.width"] == "flag" and r["steps"] == 2


def test_env_profile_and_model(tmp_path, monkeypatch):
    cfg = write(tmp_path, "[default]\nmodel = 'a'\n[other]\nmodel = 'b'\n")
    monkeypatch.setenv("LLMDIT_PROFILE", "other")
    assert resolve(cfg)["model"] == "b"
    monkeypatch.setenv("LLMDIT_MODEL", "demo")
    assert resolve(cfg)["model"] == "demo"


def test_unknown_key_names_key_and_file(tmp_path):
    cfg = write(tmp_path, "[default.generation]\nstepz = 4\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*unknown key 'generation\.stepz'"):
        resolve(cfg)
    cfg = write(tmp_path, "[default]\nsampler = 'x'\n")
    with pytest.raises(ConfigError, match="unknown key 'sampler'"):
        resolve(cfg)


def test_wrong_type_names_key_and_file(tmp_path):
    cfg = write(tmp_path, "[default.generation]\nsteps = 'many'\n")
    with pytest.raises(ConfigError, match=r"c\.toml \[default\].*'generation\.steps'"):
        resolve(cfg)


def test_bad_env_value(monkeypatch):
    monkeypatch.setenv("LLMDIT_OPTIMIZATION_DTYPE", "int3")
    with pytest.raises(ConfigError, match="LLMDIT_OPTIMIZATION_DTYPE"):
        resolve()


def test_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve(write(tmp_path, "[default\n"))


def test_missing_explicit_config(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        resolve(str(tmp_path / "nope.toml"))


def test_example_config_is_valid():
    for profile in ("default", "large", "low_vram", "cpu", "demo", "rtx4090", "distributed"):
        resolve(str(EXAMPLE), profile)
    r = resolve(str(EXAMPLE), "rtx4090")
    assert (r.optimization.dtype, r.optimization.cpu_offload) == ("bfloat16", "model")
    assert resolve(str(EXAMPLE), "distributed").optimization.dit_device == "cuda:0"


def test_config_show_reports_sources(cli, tmp_path, monkeypatch):
    shutil.copy(EXAMPLE, tmp_path / "c.toml")
    monkeypatch.setenv("LLMDIT_GENERATION_STEPS", "3")
    r = cli("config", "show", "--config", "c.toml", "--profile", "demo", "--json")
    assert r.code == 0, r.stderr
    s = json.loads(r.stdout)["settings"]
    assert s["model"] == {"value": "demo", "source": "c.toml [demo]"}
    assert s["generation.steps"] == {"value": 3, "source": "LLMDIT_GENERATION_STEPS"}
    from llmdit_cli.families.zimage import VARIANTS as FAMILIES

    assert s["generation.width"] == {"value": FAMILIES["demo"]["width"], "source": "model family demo"}
    text = cli("config", "show", "--config", "c.toml").stdout
    assert "generation.guidance_scale" in text and "model family z-image-turbo" in text


def test_config_applies_to_generate(cli, tmp_path):
    write(tmp_path, "[default]\nmodel = 'demo'\n[default.generation]\nwidth = 32\nheight = 48\nsteps = 2\n")
    r = cli("generate", "a cat", "--config", "c.toml", "--seed", 1, "-o", "a.png")
    assert r.code == 0, r.stderr
    from PIL import Image

    img = Image.open("a.png")
    assert img.size == (32, 48) and json.loads(img.text["llmdit"])["steps"] == 2


def test_config_error_is_one_line(cli, tmp_path):
    write(tmp_path, "[default.generation]\nsteps = 'x'\n")
    assert_one_line_error(cli("generate", "a", "--config", "c.toml"), "generation.steps", "c.toml")


def test_guidance_sections_layer_and_show(cli, tmp_path, monkeypatch):
    cfg = write(
        tmp_path,
        "[default.slg]\nscale = 2.0\nlayers = [0, 1]\n[default.dype]\nenabled = true\n"
        'method = "ntk"\n[default.optimization]\nvae_tiling = true\nattention_backend = "sdpa"\n',
    )
    monkeypatch.setenv("LLMDIT_SLG_STOP", "0.75")
    r = resolve(cfg, None, {"dype_scale": 1.5})
    assert (r["slg_scale"], r["slg_layers"], r["slg_stop"], r["dype"], r["dype_method"], r["dype_scale"]) == (
        2.0,
        [0, 1],
        0.75,
        True,
        "ntk",
        1.5,
    )
    assert r.sources["slg.stop"] == "LLMDIT_SLG_STOP" and r.sources["dype.scale"] == "flag"
    shown = json.loads(cli("config", "show", "--config", cfg, "--model", "demo", "--json").stdout)["settings"]
    for key in (
        "slg.enabled",
        "slg.scale",
        "slg.layers",
        "slg.start",
        "slg.stop",
        "dype.enabled",
        "dype.method",
        "dype.scale",
        "dype.exponent",
        "dype.start_sigma",
        "dype.base_resolution",
        "optimization.attention_backend",
        "optimization.compile",
        "optimization.cpu_offload",
        "optimization.vae_tiling",
        "optimization.quantize",
        "optimization.transformer_file",
    ):
        assert key in shown, key
    assert shown["dype.base_resolution"] == {"value": 32, "source": "model family demo"}
    assert shown["slg.start"]["source"] == "model family demo"


def test_guidance_config_reaches_the_image(cli, tmp_path):
    from llmdit_cli.pngmeta import settings_of

    cfg = write(tmp_path, "[default.slg]\nscale = 2.0\nlayers = [0, 1]\n")
    r = cli(
        "generate", "a red circle on a blue background", "--model", "demo", "--seed", 1, "--config", cfg, "-o", "o.png"
    )
    assert r.code == 0, r.stderr
    s = settings_of(open("o.png", "rb").read(), "o.png")
    assert (s["slg_scale"], s["slg_layers"]) == (2.0, [0, 1])


def test_bad_guidance_config_value(tmp_path):
    with pytest.raises(ConfigError, match=r"slg.layers"):
        resolve(write(tmp_path, '[default.slg]\nlayers = "seven"\n'), None, {})


def test_config_show_says_where_it_looked_for_a_config_file(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("llmdit_cli.config.default_config_path", lambda: tmp_path / "nowhere" / "config.toml")
    text = cli("config", "show").stdout
    assert f"# config file: none at {tmp_path / 'nowhere' / 'config.toml'}" in text.splitlines()[0]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "[large.dype]\nenabled = true\n"])
def test_a_file_without_a_default_profile_sets_no_defaults(cli, tmp_path, monkeypatch, text):
    user = tmp_path / "user.toml"
    user.write_text(text)
    monkeypatch.setattr("llmdit_cli.config.default_config_path", lambda: user)
    r = resolve()
    assert r.config_path == user and r["model"] == "Tongyi-MAI/Z-Image-Turbo" and r.sources["model"] == "default"
    assert resolve(None, "default")["dype"] is False
    r = cli("config", "show", "--json")
    assert r.code == 0, r.stderr
    # Only a profile the user names must exist.
    with pytest.raises(ConfigError, match=r"unknown profile 'huge'"):
        resolve(None, "huge")
    if "large" in text:
        assert resolve(None, "large")["dype"] is True


def test_top_level_sections_are_the_default_profiles(cli, tmp_path):
    cfg = write(
        tmp_path,
        "model = 'demo'\n[rewriter]\napi_url = 'http://x/v1'\ntimeout = 5\n"
        "[default.generation]\nsteps = 3\n[fast.rewriter]\ntimeout = 1\n",
    )
    r = resolve(cfg)
    assert (r["model"], r.rewriter.api_url, r.rewriter.timeout, r["steps"]) == ("demo", "http://x/v1", 5.0, 3)
    assert r.sources["rewriter.timeout"] == cfg and r.sources["generation.steps"] == f"{cfg} [default]"
    assert resolve(cfg, "fast").rewriter.timeout == 1.0
    shown = json.loads(cli("config", "show", "--config", "c.toml", "--json").stdout)["settings"]
    assert shown["rewriter.api_url"] == {"value": "http://x/v1", "source": "c.toml"}
    assert shown["model"] == {"value": "demo", "source": "c.toml"}
    err = assert_one_line_error(cli("config", "show", "--config", "c.toml", "--profile", "rewriter"), "c.toml")
    assert "unknown profile 'rewriter'" in err and "[rewriter] is a settings section" in err
    with pytest.raises(ConfigError, match=r"bad value for 'rewriter\.timeout'"):
        resolve(write(tmp_path, "[rewriter]\ntimeout = -1\n"))


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[rewriter]\ntimeout = 5\n[default.rewriter]\napi_model = 'm'\n", ("[rewriter]", "[default.rewriter]")),
        ("model = 'a'\n[default]\nmodel = 'b'\n", ("model and [default] model",)),
        ("steps = 4\n", ("unknown key 'steps'",)),
        (
            "[rewritter]\napi_url = 'http://x/v1'\n",
            ("[rewritter]: unknown key 'api_url'", "did you mean the section [rewriter]?"),
        ),
        ("[large.generation]\nstepz = 4\n", ("[large]: unknown key 'generation.stepz'",)),  # checked, though not used
    ],
)
def test_top_level_settings_that_clash_or_are_no_setting(cli, tmp_path, text, needles):
    write(tmp_path, text)
    assert_one_line_error(cli("config", "show", "--config", "c.toml"), "c.toml", *needles)


def test_example_config_leaves_the_rewriter_template_to_the_model_family(cli):
    assert resolve(str(EXAMPLE)).rewriter.template is None
    args = ["rewrite", "triangle, yellow, on black", "--model", "demo", "--temperature", 0, "--max-new-tokens", 24]
    with_example, family = cli(*args, "--config", EXAMPLE), cli(*args, "--template", "demo-caption")
    assert with_example.code == 0, with_example.stderr
    assert with_example.stdout == family.stdout


@pytest.mark.parametrize("command", [("config", "show", "--config"), ("sweep",), ("train",)])
def test_a_binary_file_as_config_or_recipe_is_one_line(cli, tmp_path, command):
    (tmp_path / "some.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    assert_one_line_error(cli(*command, "some.png"), "some.png: cannot read as UTF-8 TOML")


def test_a_folder_as_config_says_so(cli, tmp_path, monkeypatch):
    (tmp_path / "adir").mkdir()
    assert_one_line_error(cli("config", "show", "--config", "adir"), "adir: is a folder")
    monkeypatch.setenv("LLMDIT_CONFIG", "adir")
    assert_one_line_error(cli("config", "show"), "adir: is a folder")
