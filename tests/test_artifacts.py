"""Stage-file format: header, validation, atomic writes."""

import json
import os

import pytest
import torch
from safetensors.torch import save

from llmdit_cli import artifacts
from llmdit_cli.errors import InputError


def stage_bytes(kind="embeds", schema="1", **extra):
    meta = {"llmdit.kind": kind, "llmdit.schema": schema, "llmdit.params": json.dumps({"prompts": ["p"]}), **extra}
    return save({"prompt_embeds.0": torch.ones(3, 4), "negative_prompt_embeds.0": torch.zeros(2, 4)}, metadata=meta)


def test_parse_reads_header_and_shapes():
    s = artifacts.parse_stage(stage_bytes(), "f", expect="embeds")
    assert s.kind == "embeds" and s.schema == 1 and s.params == {"prompts": ["p"]}
    assert s.shapes == {"prompt_embeds.0": [3, 4], "negative_prompt_embeds.0": [2, 4]}
    cond, uncond = artifacts.split_embeds(s.tensors())
    assert [t.shape[0] for t in cond] == [3] and [t.shape[0] for t in uncond] == [2]


def test_newer_schema_is_refused():
    with pytest.raises(InputError, match="schema 9 is newer"):
        artifacts.parse_stage(stage_bytes(schema="9"), "f")


def test_wrong_kind_names_both():
    with pytest.raises(InputError, match="f: holds embeds, but latents are expected"):
        artifacts.parse_stage(stage_bytes(), "f", expect="latents")


def test_truncated_file():
    data = stage_bytes()
    with pytest.raises(InputError, match="not a llmdit stage file"):
        artifacts.parse_stage(data[:20], "f")


def test_split_embeds_orders_items_numerically():
    t = {f"prompt_embeds.{i}": torch.full((1, 1), float(i)) for i in (10, 2, 1, 0)}
    cond, _ = artifacts.split_embeds(t)
    assert [float(x) for x in cond] == [0.0, 1.0, 2.0, 10.0]


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(artifacts.WriteError, match="x.bin: cannot write .disk full"):  # one line, the file named
        artifacts.write_bytes_atomic(str(target), b"new data")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_atomic_write_creates_parents(tmp_path):
    artifacts.write_bytes_atomic(str(tmp_path / "a" / "b" / "c.bin"), b"x")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"x"
