"""Readers check everything they read: corrupt stage files and PNG settings end in a one-line
error that says what is wrong, never in the `unexpected ...` catch-all."""

import json
import os
import struct

import pytest
import torch
from helpers import assert_one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save

from llmdit_cli import artifacts, workflows
from llmdit_cli.errors import LlmditError

CASES = int(os.environ.get("READER_FUZZ_CASES", "300"))


def embeds_file() -> bytes:
    meta = artifacts.stage_metadata(
        "embeds",
        {"model": "demo", "hidden_size": 32, "hidden_layer": -2, "count": 2},
        {"prompts": ["a", "b"], "encoder": {}},
    )
    return save(
        {
            "prompt_embeds.0": torch.randn(3, 32),
            "prompt_embeds.1": torch.randn(2, 32),
            "negative_prompt_embeds.0": torch.randn(1, 32),
            "negative_prompt_embeds.1": torch.randn(1, 32),
        },
        metadata=meta,
    )


def latents_file() -> bytes:
    meta = artifacts.stage_metadata(
        "latents",
        {"model": "demo", "height": 4, "width": 4, "channels": 16, "count": 1, "sigma": 0},
        {"images": [{"seed": 1}]},
    )
    return save({"latents": torch.randn(1, 16, 2, 2)}, metadata=meta)


def split(data: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def join(header, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def corrupted(draw):
    """A real stage file with one structured or byte-level corruption."""
    data = draw(st.sampled_from([embeds_file(), latents_file()]))
    header, body = split(data)
    how = draw(st.sampled_from(["field", "drop", "rename", "meta", "meta_table", "truncate", "flip", "extra"]))
    keys = [k for k in header if k != "__metadata__"]
    if how == "field":  # a tensor entry's dtype / shape / data_offsets becomes something else
        key = draw(st.sampled_from(keys))
        header[key][draw(st.sampled_from(["dtype", "shape", "data_offsets"]))] = draw(JSON)
    elif how == "drop":
        key = draw(st.sampled_from(keys))
        header[key].pop(draw(st.sampled_from(["dtype", "shape", "data_offsets"])))
    elif how == "rename":
        key = draw(st.sampled_from(keys))
        header[
            draw(st.sampled_from(["prompt_embeds.x", "latents", "prompt_embeds.01", "x", "negative_prompt_embeds.-1"]))
        ] = header.pop(key)
    elif how == "meta":  # a header value becomes other text (numbers, JSON lists, nonsense)
        key = draw(st.sampled_from(sorted(header["__metadata__"])))
        header["__metadata__"][key] = draw(
            st.sampled_from(["x", "[1, 2]", "-1", "", "{}", "1e400", "null", "[]"]) | st.text(max_size=10)
        )
    elif how == "meta_table":
        header["__metadata__"] = draw(JSON)
    elif how == "extra":
        header[draw(st.text(max_size=10))] = draw(JSON)
    data = join(header, body)
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        pos = draw(st.integers(0, len(data) - 1))
        data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
    return data


def read_like_the_commands(path: str) -> None:
    """What inspect, generate --from-embeds and decode read, before any model is involved."""
    stage = artifacts.read_stage(path)
    if stage.kind == "embeds":
        e = workflows.read_embeds(path)
        assert all(t.ndim == 2 for t in [*e.cond, *e.uncond])
    else:
        lat = artifacts.read_stage(path, expect="latents").tensors()["latents"]
        assert lat.ndim == 4
        stage.meta_int("height")


@settings(
    max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(data=corrupted())
def test_corrupt_stage_files_fail_cleanly(tmp_path, data):
    path = tmp_path / "x.safetensors"
    path.write_bytes(data)
    try:
        read_like_the_commands(str(path))
    except LlmditError:
        pass


STRUCTURED = {
    "tensor entry without shape": lambda h: h["prompt_embeds.0"].pop("shape"),
    "key prompt_embeds.x": lambda h: h.__setitem__("prompt_embeds.x", h.pop("prompt_embeds.1")),
    "offsets past the end": lambda h: h["prompt_embeds.0"].__setitem__("data_offsets", [0, 10**9]),
    "__metadata__ a list": lambda h: h.__setitem__("__metadata__", ["a", "b"]),
    "llmdit.params a JSON list": lambda h: h["__metadata__"].__setitem__("llmdit.params", "[1, 2]"),
    "hidden size x": lambda h: h["__metadata__"].__setitem__("llmdit.hidden_size", "x"),
    "dtype Q4": lambda h: h["prompt_embeds.0"].__setitem__("dtype", "Q4"),
    "3-D embedding": lambda h: h["prompt_embeds.0"].__setitem__("shape", [1, 5, 32]),
}


@pytest.mark.parametrize("case", sorted(STRUCTURED))
def test_structured_corruption_through_the_commands(case, cli, tmp_path):
    header, body = split(embeds_file())
    STRUCTURED[case](header)
    path = tmp_path / "bad.embeds.safetensors"
    path.write_bytes(join(header, body))
    for args in (["inspect", path], ["generate", "--from-embeds", path, "--model", "demo", "-o", "x.png"]):
        line = assert_one_line_error(cli(*args), str(path))
        assert "unexpected" not in line, line
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("case", ["latents renamed", "latents 3-D", "height x"])
def test_corrupt_latents_through_decode(case, cli, tmp_path):
    header, body = split(latents_file())
    if case == "latents renamed":
        header["lat"] = header.pop("latents")
    elif case == "latents 3-D":
        header["latents"]["shape"] = [16, 16, 16]
    else:
        header["__metadata__"]["llmdit.height"] = "x"
    path = tmp_path / "bad.latents.safetensors"
    path.write_bytes(join(header, body))
    line = assert_one_line_error(cli("decode", path, "-o", "x.png"), str(path))
    assert "unexpected" not in line, line


@pytest.mark.parametrize(
    "stored, needle",
    [
        ([1, 2], "JSON list, not an object"),
        ({"prompt": "a", "seed": "x"}, "'seed' is 'x', not a whole number"),
        ({"prompt": "a", "seed": 1, "encoder": 5}, "'encoder' is 5, not a table"),
        ({"prompt": 3, "seed": 1}, "'prompt' is 3, not text"),
    ],
)
def test_bad_png_settings(cli, tmp_path, stored, needle):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("llmdit", json.dumps(stored))
    Image.new("RGB", (8, 8)).save(tmp_path / "p.png", pnginfo=info)
    for args in (["inspect", tmp_path / "p.png"], ["generate", "--from-png", tmp_path / "p.png", "-o", "x.png"]):
        line = assert_one_line_error(cli(*args), needle)
        assert "unexpected" not in line, line


@pytest.mark.parametrize(
    "stored, needles",
    [
        (
            {"steps": -3},
            ["p.png (stored settings): bad value for 'generation.steps' (-3)", "greater than or equal to 1"],
        ),
        ({"steps": "x"}, ["p.png (stored settings): bad value for 'generation.steps'"]),
        ({"width": 30}, ["generation.width (from", "30: must be a positive multiple of 16"]),
    ],
)
def test_bad_stored_value_is_named_with_its_png(cli, tmp_path, stored, needles):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("llmdit", json.dumps({"prompt": "a", "seed": 1, "model": "demo", **stored}))
    Image.new("RGB", (8, 8)).save(tmp_path / "p.png", pnginfo=info)
    line = assert_one_line_error(cli("generate", "--from-png", tmp_path / "p.png", "-o", "x.png"), *needles)
    assert "--steps" not in line and "--width" not in line
    # a flag given on top replaces the stored value, and is named as the flag
    (field,) = stored
    r = cli("generate", "--from-png", tmp_path / "p.png", f"--{field}", 0, "-o", "x.png")
    assert_one_line_error(r, f"--{field} 0: must be")


def test_records_that_do_not_match_the_tensors(cli, tmp_path):
    header, body = split(embeds_file())
    header.pop("negative_prompt_embeds.1")  # 2 prompt embeddings, 1 negative
    path = tmp_path / "bad.embeds.safetensors"
    path.write_bytes(join(header, body))
    assert_one_line_error(
        cli("generate", "--from-embeds", path, "--model", "demo", "-o", "x.png"), "2 prompt embeddings but 1 negative"
    )
    header, body = split(latents_file())
    header["__metadata__"]["llmdit.params"] = json.dumps({"images": [1]})
    path = tmp_path / "bad.latents.safetensors"
    path.write_bytes(join(header, body))
    assert_one_line_error(cli("decode", path, "-o", "x.png"), "llmdit.params images should be a list of 1")
    deep = tmp_path / "deep.latents.safetensors"
    header["__metadata__"]["llmdit.params"] = "[" * 100000 + "]" * 100000
    deep.write_bytes(join(header, body))
    assert_one_line_error(cli("inspect", deep), "not valid JSON")
