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
        "styled.png",
        "rewritten.png",
        "vl.png",
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
