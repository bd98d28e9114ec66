"""The command surface: fast help without torch, completions, inspect."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
from llmdit_cli.cli.app import COMMANDS as REGISTERED  # noqa: E402 - light: Typer only

COMMANDS = list(REGISTERED)  # every command's help is checked, new ones included


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.parametrize(
    "argv", [[], *[[c] for c in COMMANDS], ["config", "show"], ["lora", "inspect"], ["lora", "convert"]]
)
def test_help_never_imports_torch(argv):
    code = (
        "import sys\nfrom llmdit_cli.cli.app import app\n"
        f"try:\n    app({[*argv, '--help']!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'safetensors.torch') if m in sys.modules]\n"
        "assert not heavy, heavy\nprint('ok')\n"
    )
    r = python(code)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr + r.stdout


def test_python_m_and_version():
    r = subprocess.run([sys.executable, "-m", "llmdit_cli", "--version"], capture_output=True, text=True)
    from llmdit_cli import __version__

    assert r.returncode == 0 and r.stdout.strip() == f"llmdit {__version__}"


@pytest.mark.parametrize("cmd", ["generate", "img2img"])
def test_help_lists_the_flags(cli, cmd):
    r = cli(cmd, "--help")
    for flag in [
        "--steps",
        "--shift",
        "--guidance-scale",
        "--cfg-normalization",
        "--cfg-truncation",
        "--seed",
        "--num-images",
        "--width",
        "--height",
        "--save-latents",
        "--lora",
        "--dtype",
        "--cpu-offload",
        "--dit-device",
        "--from-embeds",
        "--config",
        "--profile",
        "--slg",
        "--slg-scale",
        "--slg-layers",
        "--slg-start",
        "--slg-stop",
        "--dype",
        "--dype-method",
        "--dype-scale",
        "--dype-exponent",
        "--dype-start-sigma",
        "--dype-base-resolution",
        "--attention-backend",
        "--compile",
        "--vae-tiling",
        "--quantize",
        "--transformer-file",
    ]:
        assert flag in r.stdout, flag


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completions_are_current(shell):
    from llmdit_cli.cli.completions import render

    path = ROOT / "completions" / {"bash": "llmdit.bash", "zsh": "_llmdit", "fish": "llmdit.fish"}[shell]
    assert path.read_text() == render(shell), f"{path} is stale: run python scripts/gen_completions.py"


def test_inspect_embeds_needs_no_torch(cli, tmp_path):
    assert cli("encode", "a cat", "--model", "demo", "-o", "e.embeds.safetensors").code == 0
    code = (
        "import sys\nfrom llmdit_cli.cli.app import app\n"
        f"try:\n    app(['inspect', {str(tmp_path / 'e.embeds.safetensors')!r}, '--json'])\n"
        "except SystemExit as e:\n    assert e.code in (0, None)\n"
        "assert 'torch' not in sys.modules\n"
    )
    r = python(code)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "embeds" and info["header"]["model"] == "demo"
    from helpers import demo_config

    assert info["tensors"]["prompt_embeds.0"]["shape"][1] == demo_config("text_encoder")["hidden_size"]


def test_inspect_png(cli):
    assert cli("generate", "a cat", "--model", "demo", "--seed", 2, "-o", "a.png").code == 0
    r = cli("inspect", "a.png")
    assert r.code == 0 and "seed: 2" in r.stdout and "prompt: a cat" in r.stdout
    # values as JSON spells them, nested tables indented, no Python reprs
    assert "  slg: false" in r.stdout and "  transformer_file: null" in r.stdout
    assert not any(word in r.stdout for word in ("False", "None", "True", "{'"))
    assert cli("generate", "a cat", "--model", "demo", "--seed", 2, "--save-latents", "a.latents.safetensors").code == 0
    lines = cli("inspect", "a.latents.safetensors").stdout.splitlines()
    assert max(len(line) for line in lines) < 200 and "params:" in lines  # not one 1,000-character line


def test_a_random_seed_is_printed_and_recorded(cli):
    r = cli("generate", "a cat", "--model", "demo", "-o", "r.png")
    assert r.code == 0, r.stderr
    line = next(ln for ln in r.stderr.splitlines() if "(random; pass --seed to choose)" in ln)
    seed = line.split()[1]
    assert f"seed: {seed}" in cli("inspect", "r.png").stdout
    assert "random;" not in cli("generate", "a cat", "--model", "demo", "--seed", 3, "-o", "s.png").stderr


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["generate", "x", "--steps", "abc"], "'--steps'"),
        (["rewrite", "x", "--seed", str(10**20)], "'--seed'"),
        (["generate", "--bogus"], "No such option: --bogus"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_usage_errors_are_one_line(argv, needle):
    r = subprocess.run([sys.executable, "-m", "llmdit_cli", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("llmdit: error:") and needle in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("shell,name", [("bash", "llmdit.bash"), ("zsh", "_llmdit"), ("fish", "llmdit.fish")])
def test_completion_scripts_parse(shell, name):
    import shutil

    if not shutil.which(shell):
        pytest.skip(f"{shell} not installed")
    r = subprocess.run([shell, "-n", str(ROOT / "completions" / name)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_bash_completion_completes_flags():
    script = (
        f"source {ROOT / 'completions' / 'llmdit.bash'}\n"
        'COMP_WORDS=(llmdit generate --guid); COMP_CWORD=2; _llmdit; echo "${COMPREPLY[*]}"\n'
        'COMP_WORDS=(llmdit con); COMP_CWORD=1; _llmdit; echo "${COMPREPLY[*]}"\n'
    )
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert r.stdout.splitlines() == ["--guidance-scale", "config"], r.stdout + r.stderr


def test_invoked_command_alone_is_loaded():
    """`llmdit decode --help` neither imports nor builds the other commands."""
    code = (
        "import sys\nsys.argv = ['llmdit', 'decode', '--help']\nfrom llmdit_cli.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "loaded = [m for m in ('llmdit_cli.cli.generate', 'llmdit_cli.cli.train', 'llmdit_cli.cli.lora_cmd')\n"
        "          if m in sys.modules]\nassert not loaded, loaded\nprint('ok')\n"
    )
    r = python(code)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr + r.stdout
    assert "Decode a latents file" in r.stdout


def test_root_help_from_the_listing_equals_the_full_tree():
    """`llmdit --help` registers the commands without their options; what it shows is the same."""
    env = {**os.environ, "COLUMNS": "100", "TERM": "dumb"}
    full = "import sys; sys.argv = ['llmdit', '--help']\nfrom llmdit_cli.cli.app import build_app\nbuild_app()(prog_name='python -m llmdit_cli')"
    listed = subprocess.run([sys.executable, "-m", "llmdit_cli", "--help"], capture_output=True, text=True, env=env)
    built = subprocess.run([sys.executable, "-c", full], capture_output=True, text=True, env=env)
    assert listed.returncode == built.returncode == 0
    assert listed.stdout == built.stdout and "sweep" in listed.stdout


@pytest.mark.parametrize("command", ["templates list", "--help", "generate --help"])
def test_a_closed_reader_is_not_an_error(tmp_path, command):
    """`llmdit templates list | true`: the reader is gone before the first line is written; the
    command ends quietly with status 0, as standard tools do, and the pipeline succeeds. Help
    goes out through Rich, which exits 1 on a closed pipe unless told otherwise."""
    script = f"set -o pipefail; {sys.executable} -m llmdit_cli {command} | true"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_every_command_summary_is_one_line():
    """`llmdit --help` (and a group's) shows each command's first paragraph: one line, or the
    summary is broken mid-sentence at 80 columns."""
    import importlib

    docs = {}
    for name, (module, attr, group) in REGISTERED.items():
        target = getattr(importlib.import_module(module), attr)
        if not group:
            docs[name] = target.__doc__
            continue
        docs[name] = target.info.help
        for sub in target.registered_commands:
            docs[f"{name} {sub.name or sub.callback.__name__}"] = sub.callback.__doc__
    for name, doc in docs.items():
        first = (doc or "").strip().split("\n\n")[0]
        assert first and "\n" not in first, f"{name}: {first!r}"


def test_every_help_reads_at_80_columns(cli):
    """No option name, type or word of help is cut (`--gradient-checkp…`) and no line runs past
    80 columns, in any command's `--help`; a switch's negative form is still named."""
    from typer.testing import CliRunner

    from llmdit_cli.cli.app import app

    runner = CliRunner()
    argvs = [[c] for c, (_, _, group) in REGISTERED.items() if not group]
    for name, (module, attr, group) in REGISTERED.items():
        if group:
            import importlib

            target = getattr(importlib.import_module(module), attr)
            argvs += [[name, sub.name or sub.callback.__name__] for sub in target.registered_commands]
    for argv in argvs:
        r = runner.invoke(app, [*argv, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
        assert r.exit_code == 0, argv
        lines = r.stdout.splitlines()
        assert "…" not in r.stdout, (argv, [line for line in lines if "…" in line])
        assert max(len(line) for line in lines) <= 80, argv
        if argv == ["train"]:
            assert "--gradient-checkpointing-offload " in r.stdout and "--no-tensorboard: off." in r.stdout
            assert "<bool>" not in r.stdout and "--validation-prompt " in r.stdout


@pytest.mark.parametrize(
    ("model", "needles"),
    [
        ("dem", ["--model dem: not a folder, `demo` or a Hub id", "did you mean demo?"]),
        ("Tongyi-MAI/Z-Image-Turb", ["HF_HUB_OFFLINE", "did you mean Tongyi-MAI/Z-Image-Turbo?"]),
    ],
)
def test_a_mistyped_model_gets_the_closest_known_name(cli, model, needles):
    import re

    from helpers import assert_one_line_error

    line = assert_one_line_error(cli("generate", "a cat", "--model", model, "-o", "x.png"), *needles)
    assert not re.search(r"\b[A-Z][a-z]+(Error|Exception)\b", line), line  # no exception class names


def _every_command():
    """(argv, command) for the root, every command, every group and each of its subcommands."""
    import typer

    from llmdit_cli.cli.app import app

    found, todo = [], [([], typer.main.get_command(app))]
    while todo:
        argv, command = todo.pop(0)
        found.append((argv, command))
        todo += [([*argv, name], sub) for name, sub in getattr(command, "commands", {}).items()]
    return found


def _help_at(argv, columns=80):
    from typer.testing import CliRunner

    from llmdit_cli.cli.app import app

    r = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": str(columns), "TERM": "dumb"})
    assert r.exit_code == 0, (argv, r.output)
    return r.stdout


def test_every_help_text_flows_as_paragraphs():
    """A command's description (its docstring) is wrapped to the terminal, never broken where the
    source line happened to end. Wrapped text has a break only where the next word would not
    fit, so two lines of one paragraph where the next line's first word fits on the line before
    are a break kept from the source ("settings that made the" / "latents, so ..."). Indented
    (code) lines and list items keep their own lines."""
    import re

    width = 80 - 2  # Typer pads the description by a column on each side
    item = re.compile(r"(?:[-*\u2022]|\d+[.)])\s")
    for argv, _ in _every_command():
        out = _help_at(argv)
        # the description: after the usage line, up to the first panel of options or commands
        lines = [line.rstrip()[1:] for line in out.split("╭")[0].splitlines()]
        assert max(map(len, lines)) <= width, argv
        for a, b in zip(lines, lines[1:]):
            if not a.strip() or not b.strip() or a.startswith(" ") or b.startswith(" ") or item.match(b):
                continue
            assert len(a) + 1 + len(b.split()[0]) > width, f"llmdit {' '.join(argv)} --help breaks: {a!r} / {b!r}"
            assert "  " not in a.strip(), (argv, a)


def test_help_shows_brackets_as_written():
    """Help is plain text: `[rewriter]` is not taken for Rich markup and dropped ("the config's
    template", with two spaces)."""
    import re

    checked = 0
    for argv, command in _every_command():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {w for text in texts for w in re.findall(r"\[[^\]\s]+\]", text)}
        if not words:
            continue
        out = _help_at(argv, columns=200)
        for word in words:
            assert word in out, (argv, word)
            checked += 1
    assert checked  # rewrite's --template and --api-url name the config's [rewriter] table
    wide = " ".join(_help_at(["rewrite"], columns=200).split())
    assert "the config's [rewriter] template" in wide and "config [rewriter] api_url" in wide


@pytest.mark.parametrize(
    "argv,command",
    [
        (["generate", "--steps", "x"], "llmdit generate --help"),
        (["generate", "--bogus"], "llmdit generate --help"),
        (["lora", "convert", "in.safetensors"], "llmdit lora convert --help"),
        (["lora", "nope"], "llmdit lora --help"),
        (["nope"], "llmdit --help"),
    ],
)
def test_usage_errors_name_the_command_to_ask(argv, command):
    """A usage error points to the help of the command that was given, not to a placeholder."""
    r = subprocess.run([sys.executable, "-m", "llmdit_cli", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.rstrip("\n").endswith(f"(see `{command}`)") and "COMMAND" not in r.stderr, r.stderr


def test_reflow_joins_paragraph_lines_but_keeps_lists_and_code():
    from llmdit_cli.cli.helpfmt import reflow

    doc = """Summary line.

    A paragraph wrapped
    in the source at some width.
    --shard K/N starts a line but is prose.

    Steps:
    - one item
      continued
    - two
        a block under it

    Run:

        llmdit a |
          llmdit b

    \b
    kept
    as is
    """
    assert reflow(doc).split("\n\n") == [
        "Summary line.",
        "A paragraph wrapped in the source at some width. --shard K/N starts a line but is prose.",
        "Steps:\n- one item continued\n- two\n    a block under it",
        "Run:",
        "    llmdit a |\n      llmdit b",
        "kept\nas is",
    ]
    assert reflow("\b\nfirst\nparagraph\n\nnext").startswith("\b\nfirst\nparagraph")  # Typer's own mark
    # An unindented line after a list goes on with the paragraph, not with the last item.
    assert (
        reflow("Ways:\n- one\n  more\n- two\nThen prose\ngoes on.") == "Ways:\n- one more\n- two\nThen prose goes on."
    )


def test_train_help_gives_the_recipe_defaults():
    """`train`'s flags override a recipe, so their own default is None: the help says the recipe's,
    and must keep saying the true one."""
    import re

    import typer

    from llmdit_cli.cli.app import build_app
    from llmdit_cli.cli.train import OVERRIDES
    from llmdit_cli.train.recipe import Recipe

    recipe = Recipe().model_dump()
    command = typer.main.get_command(build_app("train"))
    train = command.commands["train"] if hasattr(command, "commands") else command
    checked = 0
    for param in train.params:
        m = re.search(r"\(.*?default (\S+?)[;,)]", param.help or "")
        if m and param.name in OVERRIDES:
            value = recipe
            for part in OVERRIDES[param.name].split("."):
                value = value[part]
            assert str(value) == m.group(1), (param.name, value, m.group(1))
            checked += 1
    assert checked >= 12
