"""Bad input: one clear line on stderr naming the file or flag, non-zero exit, no output file."""

import os
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error
from safetensors.torch import save_file


@pytest.fixture
def embeds(cli):
    assert cli("encode", "a cat", "--model", "demo", "-o", "e.embeds.safetensors").code == 0
    return "e.embeds.safetensors"


@pytest.fixture
def latents(cli):
    assert (
        cli(
            "generate",
            "a cat",
            "--model",
            "demo",
            "--seed",
            1,
            "--save-latents",
            "l.latents.safetensors",
            "-o",
            "first.png",
        ).code
        == 0
    )
    os.remove("first.png")
    return "l.latents.safetensors"


def no_outputs(tmp_path, *keep):
    left = sorted(p.name for p in tmp_path.iterdir() if p.name not in keep)
    assert left == [], left


def test_missing_embeds_file(cli, tmp_path):
    r = cli("generate", "--from-embeds", "gone.embeds.safetensors", "--model", "demo", "-o", "x.png")
    assert_one_line_error(r, "gone.embeds.safetensors: no such file")
    no_outputs(tmp_path)


def test_unreadable_input(cli, tmp_path):
    if os.geteuid() == 0:
        # root reads any file: a folder stands in for an unreadable path
        (tmp_path / "dir.safetensors").mkdir()
        r = cli("decode", "dir.safetensors", "-o", "x.png")
        assert_one_line_error(r, "dir.safetensors: is a folder")
        no_outputs(tmp_path, "dir.safetensors")
    else:
        (tmp_path / "locked.safetensors").write_bytes(b"x")
        os.chmod(tmp_path / "locked.safetensors", 0)
        assert_one_line_error(cli("decode", "locked.safetensors", "-o", "x.png"), "cannot read")


def test_not_a_stage_file(cli, tmp_path):
    (tmp_path / "junk.bin").write_bytes(os.urandom(256))
    assert_one_line_error(
        cli("generate", "--from-embeds", "junk.bin", "--model", "demo", "-o", "x.png"),
        "junk.bin: not a llmdit stage file",
    )
    save_file({"t": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    assert_one_line_error(
        cli("decode", "plain.safetensors", "-o", "x.png"), "plain.safetensors", "not a llmdit stage file"
    )
    no_outputs(tmp_path, "junk.bin", "plain.safetensors")


def test_embeds_where_latents_expected(cli, tmp_path, embeds):
    assert_one_line_error(cli("decode", embeds, "-o", "x.png"), embeds, "holds embeds, but latents are expected")
    assert_one_line_error(
        cli("img2img", "x", "--from-latents", embeds, "--model", "demo", "-o", "x.png"), "holds embeds"
    )
    no_outputs(tmp_path, embeds)


def test_latents_where_embeds_expected(cli, tmp_path, latents):
    r = cli("generate", "--from-embeds", latents, "--model", "demo", "-o", "x.png")
    assert_one_line_error(r, latents, "holds latents, but embeds are expected")
    no_outputs(tmp_path, latents)


def test_hidden_size_mismatch(cli, tmp_path, embeds):
    from helpers import demo_config

    from llmdit_cli.tiny import build_pipeline, save_pipeline

    save_pipeline(build_pipeline(transformer={"cap_feat_dim": 48}, text_encoder={"hidden_size": 48}), tmp_path / "m48")
    r = cli("generate", "--from-embeds", embeds, "--model", tmp_path / "m48", "-o", "x.png")
    hidden = demo_config("text_encoder")["hidden_size"]
    assert_one_line_error(r, embeds, f"hidden size {hidden}", "takes hidden size 48")
    no_outputs(tmp_path, embeds, "m48")


def test_stdin_that_is_not_utf8_is_one_line(cli):
    import os
    import subprocess
    import sys

    r = cli("encode", "-", "--model", "demo", "-o", "e.safetensors", input="é\n".encode() + b"a\xffb\n")
    assert_one_line_error(r, "stdin: line 2 is not UTF-8 text (byte 5 of the input)")
    # A real process, under a locale whose text stdin would turn the byte into a surrogate
    env = {**os.environ, "LC_ALL": "C"}
    p = subprocess.run([sys.executable, "-m", "llmdit_cli", "rewrite", "-", "--model", "demo"], input=b"a\xffb\n",
                       capture_output=True, env=env, timeout=120)  # fmt: skip
    assert p.returncode != 0
    assert p.stderr.decode().strip() == "llmdit: error: stdin: line 1 is not UTF-8 text (byte 2 of the input)"


def test_empty_stdin(cli, tmp_path):
    assert_one_line_error(
        cli("generate", "--from-embeds", "-", "--model", "demo", "-o", "x.png", input=b""), "stdin is empty"
    )
    assert_one_line_error(cli("encode", "-", "--model", "demo", "-o", "e.safetensors", input=""), "stdin is empty")
    assert_one_line_error(cli("decode", "-", "-o", "x.png", input=b""), "stdin is empty")
    no_outputs(tmp_path)


@pytest.mark.parametrize("flag,value", [("--width", 100), ("--height", 40), ("--width", 0)])
def test_size_not_multiple_of_16(cli, tmp_path, flag, value):
    r = cli("generate", "a cat", "--model", "demo", flag, value, "-o", "x.png")
    assert_one_line_error(r, f"{flag} {value}", "multiple of 16")
    no_outputs(tmp_path)


@pytest.mark.parametrize("steps", [0, -3])
def test_steps_below_one(cli, tmp_path, steps):
    assert_one_line_error(
        cli("generate", "a cat", "--model", "demo", "--steps", steps, "-o", "x.png"),
        f"--steps {steps}",
        "greater than or equal to 1",
    )
    no_outputs(tmp_path)


def test_static_values_are_refused_before_the_heavy_imports():
    """A value no model takes (`--steps 0`) is refused when the settings resolve: no torch import."""
    import subprocess
    import sys

    code = (
        "import sys; from llmdit_cli.cli.app import main\n"
        "sys.argv = ['llmdit', 'generate', 'a', '--model', 'demo', '--steps', '0', '-o', 'x.png']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip() == "False" and "--steps 0" in r.stderr, (r.stdout, r.stderr)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_strength_out_of_range(cli, tmp_path, strength):
    from PIL import Image

    Image.new("RGB", (32, 32)).save("in.png")
    r = cli("img2img", "a cat", "--image", "in.png", "--strength", strength, "--model", "demo", "-o", "x.png")
    assert_one_line_error(r, f"--strength {strength}", "than or equal to")
    no_outputs(tmp_path, "in.png")


def test_input_image_not_an_image(cli, tmp_path):
    (tmp_path / "fake.png").write_text("not a picture")
    r = cli("img2img", "a cat", "--image", "fake.png", "--model", "demo", "-o", "x.png")
    assert_one_line_error(r, "fake.png", "not an image")
    assert_one_line_error(cli("img2img", "a cat", "--image", "gone.png", "--model", "demo"), "gone.png: no such file")
    no_outputs(tmp_path, "fake.png")


def test_an_input_image_smaller_than_the_model_makes_is_one_line(cli, tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 40)).save("small.png")
    r = cli("img2img", "a cat", "--image", "small.png", "--model", "demo", "-o", "x.png")
    assert_one_line_error(r, "small.png: 8x40 pixels", "16 a side")
    no_outputs(tmp_path, "small.png")
    # with a size given, the input is resized to it, as before
    r = cli("img2img", "a cat", "--image", "small.png", "--model", "demo", "-W", 32, "-H", 32, "-o", "x.png")
    assert r.code == 0, r.stderr


def test_decompose_checks_its_layer_folder_before_the_work(cli, tmp_path):
    from PIL import Image

    Image.new("RGB", (32, 32)).save("in.png")
    Path("text.txt").write_text("x")
    r = cli("decompose", "in.png", "-o", "text.txt/layers")
    assert_one_line_error(r, "text.txt is a file, not a folder")
    no_outputs(tmp_path, "in.png", "text.txt")


@pytest.mark.parametrize(
    ("seeds", "needle"),
    [
        (["--seed", str(2**64 - 1), "--num-images", "2"], "the last seed, 18446744073709551616, is over 2^64-1"),
        (["--seed", str(2**64)], "out of range"),
        (["--seed", "1", "--seed", str(-(2**63) - 1)], "out of range"),
    ],
)
def test_seeds_out_of_range_are_one_line_before_any_image(cli, tmp_path, seeds, needle):
    """torch takes seeds from -2^63 to 2^64-1; SEED+1... past that failed after the first image."""
    r = cli("generate", "a cat", "--model", "demo", *seeds, "-o", "out/")
    assert_one_line_error(r, "--seed", needle)
    no_outputs(tmp_path)


def test_model_path_not_a_diffusers_folder(cli, tmp_path):
    (tmp_path / "empty_model").mkdir()
    assert_one_line_error(
        cli("generate", "a cat", "--model", "./empty_model", "-o", "x.png"), "./empty_model", "not a diffusers folder"
    )
    assert_one_line_error(
        cli("generate", "a cat", "--model", "./missing_model", "-o", "x.png"), "./missing_model", "no such folder"
    )
    (tmp_path / "dit.safetensors").write_bytes(b"")
    r = cli("generate", "a cat", "--model", "./dit.safetensors", "-o", "x.png")
    assert_one_line_error(r, "--model ./dit.safetensors: a file, not a model folder", "--transformer-file")
    no_outputs(tmp_path, "empty_model", "dit.safetensors")


def test_uncached_hub_model_offline(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    r = cli("generate", "a cat", "--model", "someone/not-cached", "-o", "x.png")
    assert_one_line_error(r, "someone/not-cached", "hf download")
    assert not (tmp_path / "x.png").exists()


def test_unknown_profile(cli, tmp_path):
    (tmp_path / "c.toml").write_text("[default]\nmodel = 'demo'\n[fast]\n")
    r = cli("generate", "a cat", "--config", "c.toml", "--profile", "slow", "-o", "x.png")
    assert_one_line_error(r, "unknown profile 'slow'", "default, fast")
    no_outputs(tmp_path, "c.toml")


def test_no_prompt(cli, tmp_path):
    assert_one_line_error(cli("generate", "--model", "demo", "-o", "x.png"), "no prompt")


def test_binary_refused_on_terminal(monkeypatch, capsys):
    import sys

    from llmdit_cli.artifacts import check_binary_target
    from llmdit_cli.errors import UsageError

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    with pytest.raises(UsageError, match="terminal"):
        check_binary_target("-")


def test_several_images_need_a_pattern(cli, tmp_path):
    r = cli("generate", "a cat", "a dog", "--model", "demo", "--seed", 1, "-o", "one.png")
    assert_one_line_error(r, "-o one.png", "pattern")
    no_outputs(tmp_path)


def test_debug_shows_traceback(cli, monkeypatch):
    monkeypatch.setenv("LLMDIT_DEBUG", "1")
    r = cli("decode", "nothing.safetensors")
    assert r.code != 0 and r.exception is not None and "no such file" in str(r.exception)


def test_prompt_longer_than_the_caption_axis(cli, tmp_path, tiny_model):
    # the tiny model's caption axis holds 256 positions: at most 224 caption tokens
    long_prompt = "a red circle on a blue background " * 10
    r = cli(
        "generate",
        long_prompt,
        "--model",
        tiny_model,
        "--seed",
        1,
        "-W",
        32,
        "-H",
        32,
        "-o",
        "x.png",
        "--long-prompt-mode",
        "error",
    )
    assert_one_line_error(r, "tokens", "at most 224", "--max-length 224")
    no_outputs(tmp_path)
    assert (
        cli(
            "generate",
            long_prompt,
            "--model",
            tiny_model,
            "--seed",
            1,
            "-W",
            32,
            "-H",
            32,
            "--max-length",
            224,
            "-o",
            "x.png",
        ).code
        == 0
    )


@pytest.mark.parametrize(
    "flag,value,needle", [("--device", "nonsense", "not a device"), ("--dit-device", "cuda:7", "CUDA")]
)
def test_bad_device(cli, tmp_path, flag, value, needle):
    if value.startswith("cuda") and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that GPU")
    assert_one_line_error(cli("generate", "a cat", "--model", "demo", flag, value, "-o", "x.png"), flag, needle)
    no_outputs(tmp_path)


def test_a_known_model_that_is_not_downloaded_gets_no_suggestion(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("generate", "a cat", "--model", "Tongyi-MAI/Z-Image-Turbo", "-o", "x.png")
    line = assert_one_line_error(r, "--model Tongyi-MAI/Z-Image-Turbo: not in the local Hugging Face cache")
    assert "did you mean" not in line


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--shift", 0], ["--shift 0", "greater than 0"]),  # sigmas of 0: a black image
        (["--cfg-truncation", 5], ["--cfg-truncation 5", "less than or equal to 1"]),
    ],
)
def test_generation_values_out_of_range_are_refused(cli, args, needles):
    assert_one_line_error(cli("generate", "a cat", "--model", "demo", *args, "-o", "x.png"), *needles)


@pytest.mark.parametrize("flag", ["--max-steps", "--batch-size", "--grad-accum"])
def test_training_counts_below_one_are_refused(cli, flag):
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo-shapes.toml"
    r = cli("train", recipe, flag, 0, "--output", "run")
    assert_one_line_error(r, f"{flag} 0: must be greater than or equal to 1")


def test_a_folder_given_as_a_recipe_says_so(cli, tmp_path):
    for command in ("train", "sweep"):
        assert_one_line_error(cli(command, tmp_path), f"{tmp_path}: is a folder, not a recipe file")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--template", "nosuch"], ["--template nosuch: no such template"]),
        (["--vl-image", "missing.png"], ["--vl-image missing.png: no such file"]),
    ],
)
def test_a_missing_template_or_vision_image_is_refused_before_loading(cli, monkeypatch, args, needles):
    from llmdit_cli.models import loading

    monkeypatch.setattr(loading.ModelHandle, "pipeline", lambda *a: pytest.fail("a model loaded"))
    for command in ("generate", "encode"):
        assert_one_line_error(cli(command, "a cat", "--model", "demo", *args, "-o", "x.out"), *needles)


def test_an_option_taken_for_an_output_file_is_refused(tmp_path):
    """`--save-latents -o x.png` (the value forgotten) would write a file named `-o`."""
    import subprocess
    import sys

    argv = [sys.executable, "-m", "llmdit_cli", "generate", "a", "--model", "demo", "--save-latents", "-o", "x.png"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--save-latents': '-o' looks like an option, not a file name" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", ["fifo", "device", "parent file", "no write", "empty"])
def test_an_output_that_cannot_take_the_file_is_refused_before_the_work(cli, tmp_path, kind):
    """A write replaces the file at the path (atomically), so a pipe or device would be swapped for
    a plain file; a folder that cannot be written fails before the model loads, not after."""
    (tmp_path / "text.txt").write_text("x")
    target, needle = {
        "fifo": ("pipe.png", "not a regular file"),
        "device": ("/dev/null", "not a regular file"),
        "parent file": ("text.txt/a.png", "text.txt is a file, not a folder"),
        "no write": ("/proc/llmdit-test/a.png", "cannot write"),
        "empty": ("", "give a file name"),
    }[kind]
    if kind == "fifo":
        os.mkfifo(tmp_path / "pipe.png")
    r = cli("generate", "a cat", "--model", "demo", "--seed", 1, "-o", target)
    assert_one_line_error(r, needle)
    assert "loading" not in r.stderr and "unexpected" not in r.stderr
    if kind == "fifo":
        assert (tmp_path / "pipe.png").is_fifo()
    assert Path("/dev/null").is_char_device()
    no_outputs(tmp_path, "text.txt", "pipe.png")


def test_writing_fails_in_one_line_naming_the_file(tmp_path):
    from llmdit_cli.artifacts import write_bytes_atomic
    from llmdit_cli.errors import InputError

    (tmp_path / "file").write_text("x")
    for path, needle in ((tmp_path / "file" / "a.png", "cannot write"), ("/dev/null", "not a regular file")):
        with pytest.raises(InputError, match=needle) as caught:
            write_bytes_atomic(str(path), b"data")
        assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--shift", "inf"], "--shift inf"),
        (["--guidance-scale", "inf"], "--guidance-scale inf"),
        (["--slg-scale", "inf"], "--slg-scale inf"),
        (["--no-slg", "--slg-scale", "2"], "--no-slg with --slg-scale 2"),
    ],
)
def test_non_finite_and_contradictory_numbers_are_refused(cli, tmp_path, args, needle):
    assert_one_line_error(cli("generate", "a cat", "--model", "demo", *args, "-o", "x.png"), needle)
    no_outputs(tmp_path)


def test_lora_specs_name_what_is_wrong(cli, tmp_path):
    from helpers import make_lora

    from llmdit_cli.models import DEMO_PATH

    lora = tmp_path / "l.safetensors"
    make_lora(DEMO_PATH, lora)
    (tmp_path / "adir").mkdir()
    for spec, needle in (
        (f"{lora}:nan", "finite"),
        (f"{lora}:abc", "the scale 'abc' is not a number"),
        ("adir", "is a folder"),
    ):
        r = cli("generate", "a cat", "--model", "demo", "--lora", spec, "-o", "x.png")
        assert_one_line_error(r, f"--lora {spec}", needle)
    r = cli("lora", "convert", lora, lora, "--to", "kohya")
    assert_one_line_error(r, "is the file being converted")
    no_outputs(tmp_path, "l.safetensors", "adir")


def test_a_switched_on_slg_with_scale_0_says_the_scale_is_why(cli):
    r = cli("generate", "a cat", "--model", "demo", "--seed", 1, "--slg", "--slg-scale", 0, "-o", "x.png")
    assert r.code == 0 and "switch it on with --slg-scale > 0" in " ".join(r.stderr.split())
    r = cli("generate", "a cat", "--model", "demo", "--seed", 1, "--no-slg", "-o", "y.png")
    assert r.code == 0 and "hint" not in r.stderr  # a switch given as off is not left unused


def test_train_refuses_a_bad_rank_before_any_work(cli, tmp_path):
    r = cli("train", "--model", "demo", "--dataset", "data", "--rank", "-4", "-o", "run")
    assert_one_line_error(r, "--rank -4", "greater than or equal to 1")
    no_outputs(tmp_path)


def test_a_truncated_png_is_called_truncated(cli, tmp_path):
    assert cli("generate", "a cat", "--model", "demo", "--seed", 1, "-o", "whole.png").code == 0
    Path("cut.png").write_bytes(Path("whole.png").read_bytes()[:-200])
    assert_one_line_error(cli("generate", "--from-png", "cut.png"), "cut.png: a truncated or corrupt PNG image")
    r = cli("img2img", "a cat", "--image", "cut.png", "--model", "demo", "-o", "x.png")
    assert_one_line_error(r, "--image cut.png", "truncated")
    no_outputs(tmp_path, "whole.png", "cut.png")


def test_img2img_says_when_the_input_size_is_cut(cli, tmp_path):
    from PIL import Image

    Image.new("RGB", (33, 47)).save("odd.png")
    r = cli("img2img", "a cat", "--image", "odd.png", "--model", "demo", "--seed", 1, "-o", "o.png")
    assert r.code == 0 and "odd.png is 33x47; made at 32x32" in " ".join(r.stderr.split()), r.stderr
    Image.new("RGB", (32, 48)).save("even.png")
    r = cli("img2img", "a cat", "--image", "even.png", "--model", "demo", "--seed", 1, "-o", "e.png")
    assert r.code == 0 and "made at" not in r.stderr


def test_messages_name_what_was_given(cli, tmp_path):
    Path("adir").mkdir()
    Path("text.txt").write_text("x")
    assert_one_line_error(cli("generate", "--file", "adir", "--model", "demo"), "--file adir: is a folder")
    assert_one_line_error(cli("templates", "list", "--templates-dir", "text.txt"), "text.txt: not a folder")
    r = cli("templates", "show", "nope")
    assert_one_line_error(r, "template nope: no such template")
    assert "--template" not in r.stderr  # a positional name, not the flag
    assert cli("generate", "a cat", "--model", "demo", "--seed", 1, "-o", "a.png").code == 0
    r = cli("generate", "--from-png", "a.png", "--from-embeds", "x.embeds.safetensors")
    assert_one_line_error(r, "give --from-png or --from-embeds, not both")
