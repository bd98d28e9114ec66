"""`--json`: every command that writes files says what it wrote, one JSON object per file."""

import json
from pathlib import Path

from PIL import Image


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_generate_and_decode_report_each_file(cli):
    r = cli(
        "generate",
        "a red circle",
        "--model",
        "demo",
        "--seed",
        3,
        "--num-images",
        2,
        "-o",
        "out/",
        "--save-latents",
        "l.latents.safetensors",
        "--json",
    )
    assert r.code == 0, r.stderr
    got = records(r.stdout)
    assert [g["kind"] for g in got] == ["latents", "image", "image"]
    latents, *images = got
    assert latents["path"] == "l.latents.safetensors" and latents["seed"] == [3, 4]
    for g, seed in zip(images, (3, 4)):
        assert Path(g["path"]).is_file()
        assert g["seed"] == seed and g["prompt"] == "a red circle"
        assert g["settings"]["seed"] == seed and g["settings"]["model"] == "demo"
    r = cli("decode", "l.latents.safetensors", "-o", "d/{index}.png", "--json")
    assert r.code == 0, r.stderr
    decoded = records(r.stdout)
    assert [d["path"] for d in decoded] == ["d/0.png", "d/1.png"]
    assert [d["seed"] for d in decoded] == [3, 4] and decoded[0]["settings"] == images[0]["settings"]


def test_encode_and_lora_convert(cli, tmp_path):
    r = cli("encode", "a cat", "a dog", "--model", "demo", "-o", "e.embeds.safetensors", "--json")
    assert r.code == 0, r.stderr
    (rec,) = records(r.stdout)
    assert rec["kind"] == "embeds" and rec["prompt"] == ["a cat", "a dog"]
    assert rec["settings"]["prompts"] == ["a cat", "a dog"] and len(rec["settings"]["token_counts"]) == 2
    from helpers import make_lora

    from llmdit_cli.models import DEMO_PATH

    lora = make_lora(DEMO_PATH, tmp_path / "l.safetensors", "kohya")
    r = cli("lora", "convert", lora, "c.safetensors", "--to", "comfyui", "--json")
    assert r.code == 0, r.stderr
    (rec,) = records(r.stdout)
    assert rec["kind"] == "lora" and rec["path"] == "c.safetensors" and rec["settings"]["layout"] == "comfyui"


def test_image_on_stdout_sends_the_record_to_stderr(cli):
    r = cli("generate", "a red circle", "--model", "demo", "--seed", 1, "-o", "-", "--json", "-q")
    assert r.code == 0, r.stderr
    assert r.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"
    (rec,) = records(r.stderr)
    assert rec["path"] == "-" and rec["seed"] == 1


def test_train_reports_its_result(cli, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (20, 200, 20 + 10 * i)).save(data / f"{i}.png")
    (data / "metadata.jsonl").write_text(
        "".join(json.dumps({"file_name": f"{i}.png", "text": "green"}) + "\n" for i in range(4))
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
        1,
        "-o",
        "run",
        "-q",
        "--json",
    )
    assert r.code == 0, r.stderr
    (rec,) = records(r.stdout)
    assert rec["kind"] == "lora" and Path(rec["path"]).is_file()
    assert rec["settings"]["lora"]["rank"] == 2 and rec["settings"]["method"] == "lora"


def test_inspect_quotes_empty_text_as_its_json_does(cli):
    assert cli("generate", "a red circle", "--model", "demo", "--steps", 1, "-o", "i.png").code == 0
    shown, as_json = cli("inspect", "i.png").stdout, json.loads(cli("inspect", "i.png", "--json").stdout)
    assert as_json["settings"]["negative_prompt"] == ""
    assert '  negative_prompt: ""' in shown.splitlines()
