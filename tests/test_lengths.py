"""Long prompts and caption lengths: every mode on real tensors in three dtypes, and through the
commands on a tiny model whose caption limit is 224 tokens."""

from __future__ import annotations

import re

import pytest
import torch
from helpers import assert_one_line_error
from safetensors.torch import load_file

from llmdit_cli.stages.lengths import FILL_MODES, LONG_MODES, fill_length, fit_length

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", [m for m in LONG_MODES if m != "error"])
def test_long_modes_fit_the_limit_in_every_dtype(mode, dtype):
    x = torch.randn(300, 32, generator=torch.Generator().manual_seed(0)).to(dtype)
    y = fit_length(x, 224, mode)
    assert y.shape == (224, 32) and y.dtype == dtype and torch.isfinite(y.float()).all()
    assert (
        fit_length(x[:100], 224, mode) is not None and fit_length(x[:100], 224, mode).shape[0] == 100
    )  # short: unchanged


@pytest.mark.parametrize("mode", ["interpolate", "pool", "attention_pool"])
def test_a_constant_sequence_stays_constant(mode):
    row = torch.randn(32)
    y = fit_length(row.expand(300, 32).clone(), 97, mode)
    assert torch.allclose(y, row.expand(97, 32), atol=1e-6)


def test_truncate_keeps_the_first_tokens_and_error_refuses():
    from llmdit_cli.errors import UsageError

    x = torch.randn(300, 8)
    assert torch.equal(fit_length(x, 224, "truncate"), x[:224])
    with pytest.raises(UsageError, match="300 tokens"):
        fit_length(x, 224, "error")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", FILL_MODES)
def test_fill_modes_give_n_tokens_and_keep_the_content(mode, dtype):
    content = (torch.randn(10, 16) + 5).to(dtype)  # no content token is all zeros
    y = fill_length(content, 64, mode)
    assert y.shape == (64, 16) and y.dtype == dtype and torch.isfinite(y.float()).all()
    if mode == "pad_start_zero":
        kept = y[-10:]
    elif mode == "pad_middle_zero":
        kept = torch.cat([y[:5], y[-5:]])
        assert not y[5:-5].any()
    elif mode == "pad_both":  # 54 zeros: 27 before, 27 after
        kept = y[27:37]
        assert not y[:27].any() and not y[37:].any()
    else:
        kept = y[:10]
    assert torch.equal(kept, content)
    if mode == "pad_end_zero":
        assert not y[10:].any()
    assert torch.equal(fill_length(torch.cat([content] * 8), 64, mode), torch.cat([content] * 8)[:64])


LONG = " ".join(["a red circle on a blue background"] * 12)  # about 400 byte tokens with the template


def test_a_long_prompt_is_truncated_with_a_hint_or_refused(cli, tiny_model):
    args = [
        "generate",
        LONG,
        "--model",
        tiny_model,
        "-W",
        32,
        "-H",
        32,
        "--steps",
        1,
        "--seed",
        1,
        "--max-length",
        1000,
    ]
    r = cli(*args, "-o", "t.png")
    assert r.code == 0, r.stderr
    said = " ".join(r.stderr.split())
    assert "more than the 224" in said and "--long-prompt-mode truncate keeps the first 224 and drops" in said
    assert_one_line_error(
        cli(*args, "--long-prompt-mode", "error", "-o", "e.png"), "takes at most 224", "--long-prompt-mode"
    )
    for mode in ("interpolate", "pool", "attention_pool"):
        assert cli(*args, "--long-prompt-mode", mode, "-o", f"{mode}.png").code == 0
    assert (
        cli(
            "encode",
            LONG,
            "--model",
            tiny_model,
            "--max-length",
            1000,
            "--long-prompt-mode",
            "pool",
            "-o",
            "e.embeds.safetensors",
        ).code
        == 0
    )
    assert load_file("e.embeds.safetensors")["prompt_embeds.0"].shape[0] == 224


def test_caption_length_through_encode(cli):
    r = cli(
        "encode",
        "a red circle",
        "--model",
        "demo",
        "--caption-length",
        48,
        "--caption-fill",
        "pad_end_mean",
        "-o",
        "c.embeds.safetensors",
    )
    assert r.code == 0, r.stderr
    tensors = load_file("c.embeds.safetensors")
    assert {t.shape[0] for t in tensors.values()} == {48}
    bad = cli("encode", "x", "--model", "demo", "--caption-fill", "stretch", "-o", "x.embeds.safetensors")
    assert_one_line_error(bad, "--caption-fill", "stretch")


def test_a_prompt_cut_at_max_length_is_said_or_refused(cli):
    from helpers import assert_one_line_error

    long_prompt = " ".join(["a red circle on a blue background"] * 40)
    r = cli("encode", long_prompt, "--model", "demo", "--max-length", 64, "-o", "cut.embeds.safetensors")
    assert r.code == 0, r.stderr
    said = " ".join(r.stderr.split())  # hints wrap at the terminal's width
    assert said.count("--max-length 64 keeps the first 64 and drops") == 1, r.stderr
    assert "hint: the prompt is " in said and "tokens formatted (template included)" in said
    r = cli("encode", long_prompt, "--model", "demo", "--max-length", 64, "--long-prompt-mode", "error",
            "-o", "refused.embeds.safetensors")  # fmt: skip
    assert_one_line_error(r, "the prompt is", "--max-length 64 would cut it", "--long-prompt-mode error")
    r = cli("encode", "a cat", "--model", "demo", "--max-length", 64, "-o", "short.embeds.safetensors")
    assert r.code == 0 and "keeps the first" not in r.stderr
    # Past the transformer's own limit (the demo's 992): the counts, and the log says what the file holds
    r = cli(
        "encode", " ".join([long_prompt] * 4), "--model", "demo", "--max-length", 6000, "-o", "l.embeds.safetensors"
    )
    said = " ".join(r.stderr.split())
    kept = re.search(r"a prompt has (\d+) tokens, more than the 992 --model demo takes; --long-prompt-mode truncate "
                     r"keeps the first 992 and drops (\d+)", said)  # fmt: skip
    assert kept and int(kept[1]) - 992 == int(kept[2]), said
    assert f"encoded {kept[1]} tokens (992 in the file)" in said
