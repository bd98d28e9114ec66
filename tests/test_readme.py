"""The README's examples are part of the contract: every `llmdit` command in it runs."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if "pip install" in line:
                line = line.split("&&", 1)[1].strip() if "&&" in line else ""
            if line.startswith(("llmdit ", "python -m llmdit_cli")):
                commands.append(line)
    return commands


def test_readme_has_the_two_start_commands():
    first = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[:2]
    assert "llmdit generate" in first[0] and "--model demo" in first[0] and "-o " in first[0]
    assert "pytest" in first[1] and ".[dev]" in first[1]


def test_readme_commands_run(tmp_path, cli):
    """Each command as written, in order, in one folder. A plain `llmdit ...` line runs through the
    same Typer app in this process (importing torch and diffusers costs ~10 s per process here);
    a pipeline, and anything else, runs in bash."""
    import shlex

    commands = readme_commands()
    assert len(commands) >= 6
    shutil.copytree(README.parent / "recipes", tmp_path / "recipes")  # the README runs from the repo root
    llmdit = f"{sys.executable} -m llmdit_cli"
    for command in commands:
        if command.startswith("llmdit ") and not any(c in command for c in "|<>;&"):
            r = cli(*shlex.split(command)[1:])
            assert r.code == 0, (command, r.stderr[-2000:], r.exception)
            continue
        script = re.sub(r"(^|\| )llmdit ", lambda m: m.group(1) + llmdit + " ", command)
        script = re.sub(r"^python -m ", sys.executable + " -m ", script)
        r = subprocess.run(
            ["bash", "-c", "set -eo pipefail\n" + script], cwd=tmp_path, capture_output=True, text=True, timeout=600
        )
        assert r.returncode == 0, (command, r.stderr[-2000:])
    for name in [
        "demo.png",
        "piped.png",
        "cat.png",
        "cat-again.png",
        "cat-regenerated.png",
        "lora.png",
        "distilled.png",
        "styled.png",
        "rewritten.png",
        "vl.png",
        "controlled.png",
        "inpainted.png",
    ]:
        assert (tmp_path / name).is_file(), name
    assert len(list((tmp_path / "runs" / "dype" / "images").glob("*.png"))) == 28
    assert (tmp_path / "report.html").is_file() and len(list(tmp_path.glob("dype-[0-9].png"))) == 4
    assert len(list(tmp_path.glob("dype-diff-*.png"))) == 6  # prompts x methods
    assert len(list((tmp_path / "runs" / "hidden-layers").glob("manifest.*-of-2.jsonl"))) == 2
    assert len(list((tmp_path / "out").glob("*.png"))) == 4


def test_readme_serve_example_runs(tmp_path):
    """The Serving block as written (on a free port): a server, remote encoding, a curl call."""
    import socket

    block = re.search(r"```bash serve\n(.*?)```", README.read_text(), flags=re.S).group(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = block.replace(":8000", f":{port}").replace("--port 8000", f"--port {port}")
    script = re.sub(r"(^|\| )llmdit ", lambda m: m.group(1) + f"{sys.executable} -m llmdit_cli ", script, flags=re.M)
    script = script.replace("| python -c", f"| {sys.executable} -c")
    script = "set -e\ntrap 'kill $(jobs -p) 2>/dev/null' EXIT\n" + script
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert '"status":"ok"' in r.stdout
    from PIL import Image

    for name in ("remote.embeds.safetensors", "remote.png"):
        assert (tmp_path / name).is_file(), name
    with Image.open(tmp_path / "api.png") as img:
        assert img.size == (64, 64) and "llmdit" in img.info


def test_readme_layers_example_runs(tmp_path, cli):
    """The Layers block as written, on tiny Qwen-Image-Layered and Edit-Plus folders this test
    builds: each decompose / edit-layer line gets --layered-model / --edit-model and --steps 2."""
    import json
    import shlex

    import numpy as np
    from PIL import Image

    from llmdit_cli.tiny import save_qwen_image

    layered = save_qwen_image("layered", tmp_path / "models" / "layered", seed=1)
    edit = save_qwen_image("edit", tmp_path / "models" / "edit", seed=2)
    a = np.zeros((64, 96, 3), np.uint8)
    a[16:48, 24:72] = [200, 30, 30]
    Image.fromarray(a).save(tmp_path / "photo.png")
    block = re.search(r"```bash layers\n(.*?)```", README.read_text(), flags=re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert [c.split()[1] for c in commands][:3] == ["decompose", "edit-layer", "edit-layer"]
    for command in commands:
        args = shlex.split(command)[1:]
        if args[0] == "decompose":
            args += ["--layered-model", layered, "--steps", "2"]
        if args[0] == "edit-layer" and "--layer" in args:
            args += ["--edit-model", edit, "--steps", "2"]
        r = cli(*args)
        assert r.code == 0, (command, r.stderr[-2000:], r.exception)
    record = json.loads((tmp_path / "layers" / "layers.json").read_text())
    assert len(record["layers"]) == 3 and record["settings"]["captioned"]  # no --prompt: the model's caption
    assert record["edits"][0]["instruction"] == "make it blue" and (tmp_path / "layers" / "layer_01.v1.png").is_file()
    assert record["order"] == [2, 0, 1] and record["hidden"] == [0]
    assert (tmp_path / "layers" / "layers.ora").is_file()
    for name in ("layer_00.png", "layer_01.png", "composite.png"):
        assert (tmp_path / "photo-layers" / name).read_bytes() == (tmp_path / "photo-layers-again" / name).read_bytes()


def test_ci_runs_the_readmes_test_command():
    """`.ci/run` runs the test command the README gives (with its --durations), and the README says
    how long it takes."""
    block = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)[1]
    line = next(x for x in block.splitlines() if x.startswith("python -m pytest"))
    command, _, comment = line.partition("#")
    assert "--durations" in command and "min" in comment
    assert command.strip() in (README.parent / ".ci" / "run").read_text()
