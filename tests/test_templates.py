"""Prompt templates: the shipped library, user folders, front-matter errors, and templates
reaching the encoder, the embeds header, PNG settings and sweeps; built-ins in a wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, max_diff, pixels

ROOT = Path(__file__).resolve().parent.parent
REWRITERS = {
    "general-enhancer",
    "photographic-detailer",
    "concise-cleanup",
    "translate-to-english",
    "describe-an-image",
}


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.md").write_text(text)
    return folder


def template(name="mine", description="Mine", category="testing", extra="", body="Paint it in soft morning light."):
    return f"---\nname: {name}\ndescription: {description}\ncategory: {category}\n{extra}---\n{body}\n"


def test_the_shipped_library():
    from llmdit_cli.prompt_templates import BUILTIN, available

    assert (ROOT / "templates").resolve() == BUILTIN.resolve()  # the top-level folder is the package's
    every = available()
    styles = [t for t in every.values() if t.meta.category != "rewriter"]
    assert len(styles) >= 140 and len({t.meta.category for t in styles}) >= 12
    assert REWRITERS <= {t.name for t in every.values() if t.meta.category == "rewriter"}
    for t in every.values():
        assert t.source.parent.name == t.meta.category and len(t.system) > 40, t.source


def test_list_and_show(cli):
    r = cli("templates", "list", "--json")
    assert r.code == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) >= 65 and {"name", "category", "description", "source"} <= set(rows[0])
    assert {row["source"] for row in rows} == {"built-in"}
    r = cli("templates", "list", "--category", "rewriter")
    assert r.code == 0 and len(r.stdout.splitlines()) >= 5 and "general-enhancer" in r.stdout
    shown = cli("templates", "show", "concise-cleanup")
    assert shown.code == 0 and "category: rewriter" in shown.stdout
    assert_one_line_error(cli("templates", "list", "--category", "nope"), "--category nope: no such category")
    lines = cli("templates", "list", "--category", "portrait", "--search", "neon").stdout.splitlines()
    assert lines[0].split() == ["NAME", "CATEGORY", "DESCRIPTION"] and len(lines) >= 2
    assert all("neon" in line.lower() for line in lines[1:])
    bare = cli("templates", "list", "--category", "portrait", "--search", "neon", "--no-header").stdout.splitlines()
    assert bare == lines[1:]
    assert_one_line_error(
        cli("templates", "show", "concise-cleanupp"), "no such template; did you mean concise-cleanup"
    )
    by_case = [cli("templates", "list", "-c", c, "--no-header").stdout for c in ("portrait", "Portrait")]
    assert by_case[0] == by_case[1] and by_case[0]
    r = cli("templates", "list", "--search", "zzzz")
    assert r.code == 0 and "--search zzzz: no template" in r.stderr


def test_show_prints_values_as_the_other_views_do(cli):
    from llmdit_cli.cli.output import plain_value

    shown = cli("templates", "show", "neon-night-portrait").stdout
    assert "enable_thinking: " in shown and "True" not in shown and "False" not in shown
    assert [plain_value(v) for v in ("", "true", "12", " a", "two\nlines", "a cat", None, False)] == [
        '""',
        '"true"',
        '"12"',
        '" a"',
        '"two\\nlines"',
        "a cat",
        "null",
        "false",
    ]


def test_a_user_folder_overrides_a_builtin_by_name(cli, tmp_path):
    folder = write(tmp_path / "mine", "concise-cleanup", template("concise-cleanup", "My own cleanup", "rewriter"))
    rows = json.loads(cli("templates", "list", "--json", "--templates-dir", folder).stdout)
    mine = [row for row in rows if row["name"] == "concise-cleanup"]
    assert len(mine) == 1 and mine[0]["description"] == "My own cleanup" and mine[0]["source"].startswith(str(folder))


@pytest.mark.parametrize(
    "text,needle",
    [
        ("no front matter here\n", "no front matter"),
        (template(extra="enable_thinking: maybe\n"), "field 'enable_thinking'"),
        (template(extra="colour: red\n"), "field 'colour': unknown field"),
        ("---\nname: mine\ncategory: testing\n---\nBody.\n", "field 'description'"),
        ("---\nname: [unclosed\n---\nBody.\n", "not valid YAML"),
        (template(name="other"), "field 'name': 'other' differs from the file name"),
        (template(body=""), "has no body"),
    ],
)
def test_bad_front_matter_names_the_file_and_the_field(cli, tmp_path, text, needle):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "mine.md").write_text(text)
    r = cli("templates", "list", "--templates-dir", folder)
    assert_one_line_error(r, str(folder / "mine.md"), needle)


def test_a_template_formats_the_prompt_and_flags_override_it(cli, tmp_path):
    folder = write(tmp_path / "t", "mine", template(extra='enable_thinking: false\nassistant_content: "A photo of"\n'))
    r = cli("encode", "a cat", "--model", "demo", "--template", "mine", "--templates-dir", folder, "--show-format")
    assert r.code == 0, r.stderr
    from llmdit_cli.prompts import ChatFormat

    expected = ChatFormat("Paint it in soft morning light.", None, False, "A photo of").format("a cat")
    assert r.stdout.startswith(expected)
    r = cli(
        "encode",
        "a cat",
        "--model",
        "demo",
        "--template",
        "mine",
        "--templates-dir",
        folder,
        "--show-format",
        "--enable-thinking",
        "--system-prompt",
        "Plain.",
    )
    assert r.stdout.startswith(ChatFormat("Plain.", None, True, "A photo of").format("a cat"))


def test_template_name_and_hash_reach_the_header_and_the_png(cli, tmp_path):
    import hashlib

    folder = write(tmp_path / "t", "mine", template())
    digest = hashlib.sha256((folder / "mine.md").read_bytes()).hexdigest()
    flags = ["--model", "demo", "--template", "mine", "--templates-dir", folder]
    assert cli("encode", "a red circle", *flags, "-o", "e.embeds.safetensors").code == 0
    from llmdit_cli.artifacts import read_stage

    params = read_stage("e.embeds.safetensors").params
    assert params["template"] == {"name": "mine", "sha256": digest} and params["encoder"]["template"] == "mine"
    assert cli("generate", "a red circle", *flags, "--seed", 3, "-o", "t.png").code == 0
    from llmdit_cli.pngmeta import settings_of

    stored = settings_of(Path("t.png").read_bytes(), "t.png")
    assert stored["template"] == {"name": "mine", "sha256": digest} and stored["encoder"]["template"] == "mine"
    plain = cli("generate", "a red circle", "--model", "demo", "--seed", 3, "-o", "plain.png")
    assert plain.code == 0 and max_diff(pixels("t.png"), pixels("plain.png")) > 0  # the template changes the image
    again = cli("generate", "--from-png", "t.png", "--templates-dir", folder, "-o", "again.png")
    assert again.code == 0, again.stderr
    assert max_diff(pixels("t.png"), pixels("again.png")) == 0


def test_templates_are_a_sweep_axis(cli, tmp_path):
    (tmp_path / "s.toml").write_text(
        'model = "demo"\nprompts = ["a red circle"]\nseeds = [1]\n[base]\ngeneration.width = 32\n'
        "generation.height = 32\n[grid]\n"
        'encoder.template = ["photographic-detailer", "concise-cleanup"]\n'
    )
    r = cli("sweep", "s.toml", "-q")
    assert r.code == 0, r.stderr
    records = [json.loads(line) for line in Path("runs/s/manifest.jsonl").read_text().splitlines()]
    assert sorted(rec["settings"]["template"]["name"] for rec in records) == [
        "concise-cleanup",
        "photographic-detailer",
    ]


def test_builtins_ship_in_the_wheel(tmp_path):
    """Built from this checkout, installed into a plain folder, listed from there."""
    wheel = tmp_path / "wheel"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheel, ROOT],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    target = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "-q",
            "--target",
            target,
            *wheel.glob("*.whl"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    code = "import llmdit_cli.prompt_templates as t, json; print(json.dumps([str(t.BUILTIN), len(t.available())]))"
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    where, count = json.loads(done.stdout)
    from llmdit_cli.prompt_templates import available

    assert where.startswith(str(target)) and count == len(available()) >= 65


@pytest.mark.parametrize("system", [None, "You draw in soft morning light.", "builtin"])
@pytest.mark.parametrize("thinking", [True, False])
def test_chat_format_equals_the_tokenizers_chat_template_token_for_token(system, thinking):
    from transformers import AutoTokenizer

    from llmdit_cli.models import DEMO_PATH
    from llmdit_cli.prompt_templates import find
    from llmdit_cli.prompts import ChatFormat

    if system == "builtin":
        system = find("golden-hour-portrait").system
    tok = AutoTokenizer.from_pretrained(DEMO_PATH / "tokenizer")
    prompt = "a red circle on a blue background"
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    stock = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
    ours = ChatFormat(system, None, thinking, None).format(prompt)
    assert tok(ours).input_ids == tok(stock).input_ids
    assert ours == stock


def test_a_template_that_turns_thinking_off_regenerates_from_its_png(cli, tmp_path):
    folder = write(tmp_path / "t", "quiet", template("quiet", extra="enable_thinking: false\n"))
    args = ["generate", "a red circle", "--model", "demo", "--template", "quiet", "--templates-dir", folder]
    assert cli(*args, "--seed", 4, "-o", "q.png").code == 0
    again = cli("generate", "--from-png", "q.png", "--templates-dir", folder, "-o", "again.png")
    assert again.code == 0, again.stderr
    assert max_diff(pixels("q.png"), pixels("again.png")) == 0


@pytest.mark.parametrize("name", ["/etc/passwd", "photo*", "x**"])
def test_a_template_name_is_a_name(cli, name):
    assert_one_line_error(cli("templates", "show", name), "a template is named by its file name")


def test_no_two_style_templates_are_alike():
    """Each style template says something of its own: no two share a name or a description, and
    no two system prompts share more than a fifth of their word trigrams."""
    import re

    from llmdit_cli.prompt_templates import available

    styles = [t for t in available().values() if t.meta.category != "rewriter"]
    assert len({t.meta.description.lower() for t in styles}) == len(styles)

    def trigrams(text: str) -> set:
        words = re.findall(r"[a-z]+", text.lower())
        return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}

    grams = {t.name: trigrams(t.system) for t in styles}
    names = sorted(grams)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = len(grams[a] & grams[b]) / max(1, min(len(grams[a]), len(grams[b])))
            assert shared < 0.2, (a, b, round(shared, 2))
