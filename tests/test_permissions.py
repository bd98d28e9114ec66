"""Files llmdit writes get the usual permissions (0666 minus the umask), as `cp` or PIL give."""

import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture
def umask():
    def set_mask(mask):
        old.append(os.umask(mask))

    old = []
    yield set_mask
    if old:
        os.umask(old[0])


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_stage_files_and_pngs(cli, umask, mask, expected):
    umask(mask)
    assert cli("encode", "a cat", "--model", "demo", "-o", "e.embeds.safetensors").code == 0
    r = cli(
        "generate",
        "--from-embeds",
        "e.embeds.safetensors",
        "--model",
        "demo",
        "--seed",
        1,
        "--save-latents",
        "l.latents.safetensors",
        "-o",
        "img.png",
    )
    assert r.code == 0, r.stderr
    assert cli("decode", "l.latents.safetensors", "--model", "demo", "-o", "d.png").code == 0
    for name in ["e.embeds.safetensors", "l.latents.safetensors", "img.png", "d.png"]:
        assert mode(name) == expected, (name, oct(mode(name)))


def test_training_outputs_and_lora_files(cli, umask, tmp_path):
    umask(0o022)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (200, 20 + 10 * i, 20)).save(data / f"{i}.png")
    (data / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i}.png", "text": "red"}) + "\n" for i in range(4))
    )
    r = cli(
        "train",
        "--model",
        "demo",
        "--dataset",
        data,
        "--resolution",
        32,
        "--batch-size",
        4,
        "--rank",
        2,
        "--max-steps",
        2,
        "-o",
        "run",
        "-q",
    )
    assert r.code == 0, r.stderr
    lora = Path("run/pytorch_lora_weights.safetensors")
    assert cli("lora", "convert", lora, "k.safetensors", "--to", "kohya").code == 0
    written = [
        lora,
        Path("k.safetensors"),
        Path("run/recipe.resolved.toml"),
        Path("run/losses.jsonl"),
        *[p for p in Path("run/checkpoints").rglob("*") if p.is_file()],
        *[p for p in (data / ".llmdit-cache").rglob("*") if p.is_file()],
    ]
    r = cli(
        "train",
        "--model",
        "demo",
        "--dataset",
        data,
        "--resolution",
        32,
        "--batch-size",
        4,
        "--method",
        "full",
        "--max-steps",
        1,
        "-o",
        "full",
        "-q",
    )
    assert r.code == 0, r.stderr
    written += [p for p in Path("full/model").rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(written) > 12
    for path in written:
        assert mode(path) == 0o644, (path, oct(mode(path)))
