"""Training the demo's rewriter (scripts/train_demo_rewriter.py): a small causal LM of its own,
shipped in the demo folder's `rewriter/`, that turns terse requests into demo captions.

The requests come from a grammar: a shape phrase ("red circle", "a circle in red"), a background
phrase before or after it ("on blue", "blue background, ..."), optional words around them, and
made-up words in between. The made-up words are what teach the model to follow a phrasing it
never saw: it learns that the colour next to the shape is the shape's, the other is the
background, and that the words around them do not matter. The made-up words are built partly
from the tokenizer's pieces of the colour and shape words ("el", "lo", "ci"), so an unknown word
that shares a piece with "yellow" or "circle" ("field", "cell") does not read as one.
`HELD_OUT_WORDS` are real words the grammar never uses: `benchmarks/eval_rewriter.py` phrases its
requests with them."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from llmdit_cli.tomlfiles import StrictModel, load_toml, validated
from llmdit_cli.train import shapes

# Ways to name the shape and its colour.
COLOUR_FIRST = ["{c} {s}", "a {c} {s}", "one {c} {s}", "the {c} {s}", "an image of a {c} {s}", "a {w} {c} {s}"]
SHAPE_FIRST = ["{s}, {c}", "{s} in {c}", "a {s} in {c}", "{s} of {c}", "{s}: {c}", "a {s}, {c}", "{s} {w} {c}"]
# Ways to name the background after the shape, and before it.
BACKGROUND_AFTER = [
    ", on {b}",
    " on {b}",
    " on a {b} background",
    ", {b} background",
    " over {b}",
    " with a {b} background",
    " in front of {b}",
    ", background {b}",
    " on {b} {w}",
    " {w} {b}",
    ", {w} {b}",
    " {w} a {b} {w}",
]
BACKGROUND_FIRST = [
    "{b} background, ",
    "on {b}: ",
    "on {b}, ",
    "background {b}, ",
    "{b} {w}, ",
    "{w} {b}: ",
    "on a {b} {w}, ",
    "{w} {b} {w} ",
]
# Half the requests start with the shape phrase itself.
PREFIXES = [""] * 7 + ["draw ", "make ", "show me ", "please ", "i want ", "give me ", "{w} ", "{w} {w} "]
SUFFIXES = ["", "", "", " please", " thanks", "!", ".", " {w}", ", {w}", " {w} {w}"]
# Real words the grammar uses around the shape phrase, besides the fixed ones above.
WORDS = ["small", "big", "large", "little", "simple", "plain", "nice", "flat", "bright", "clean", "centred"]
# Pieces of the colour and shape words as the demo tokenizer splits them, for made-up words.
PIECES = ["el", "lo", "ue", "re", "le", "gr", "ci", "an", "qu", "ee", "hi", "te", "ack", "cle", "low", "yel", "bl"]
LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Never in the training requests: the evaluation's unseen phrasings are made of these.
HELD_OUT_WORDS = {
    "against", "just", "backdrop", "coloured", "behind", "field", "sitting", "upon", "atop", "canvas",
    "surface", "painted", "wall", "sheet", "only", "ground", "shade", "depict", "backing", "amid",
}  # fmt: skip


class RewriterSettings(StrictModel):
    template: str = "demo-caption"
    steps: int = 2400
    batch_size: int = 32
    lr: float = 2e-3
    hidden_size: int = 128
    layers: int = 4
    # The rewriter's tokenizer reads a space after each newline, so a request's first word is the
    # same token as mid-sentence ("blue" opening a message is otherwise three pieces).
    space_after_newline: bool = True
    seed: int = 0


def load_settings(path: str) -> RewriterSettings:
    return validated(RewriterSettings, load_toml(Path(path), "recipe"), path)


def default_background(colour: str) -> str:
    """The background a request that names none gets: black, white behind a black shape."""
    return "white" if colour == "black" else "black"


def filler(rng: random.Random) -> str:
    """A word: a real one the grammar knows, or a made-up one (of letters and tokenizer pieces)."""
    if rng.random() < 0.3:
        return rng.choice(WORDS)
    parts = [rng.choice(PIECES) if rng.random() < 0.4 else rng.choice(LETTERS) for _ in range(rng.randint(2, 6))]
    word = "".join(parts)
    taken = word in shapes.COLOURS or word in shapes.SHAPES or word in HELD_OUT_WORDS
    return "x" + word if taken else word


def request(shape: str, colour: str, background: str | None, rng: random.Random) -> str:
    """One terse request for the combination; `background` None leaves it unnamed."""
    core = rng.choice(COLOUR_FIRST + SHAPE_FIRST)
    if background is not None:
        if rng.random() < 0.5:
            core = core + rng.choice(BACKGROUND_AFTER)
        else:
            core = rng.choice(BACKGROUND_FIRST) + core
    text = rng.choice(PREFIXES) + core + rng.choice(SUFFIXES)
    while "{w}" in text:
        text = text.replace("{w}", filler(rng), 1)
    return text.format(s=shape, c=colour, b=background)


def examples(n: int, rng: random.Random) -> list[tuple[str, str]]:
    """`n` (request, caption) pairs over every combination; one in five leaves the background
    unnamed (its caption has the default one)."""
    out = []
    combos = shapes.combos()
    for _ in range(n):
        shape, colour, background = rng.choice(combos)
        if rng.random() < 0.2:
            out.append((request(shape, colour, None, rng), shapes.caption(shape, colour, default_background(colour))))
        else:
            out.append((request(shape, colour, background, rng), shapes.caption(shape, colour, background)))
    return out


def prompt_text(terse: str, template: str = "demo-caption") -> str:
    from llmdit_cli.prompt_templates import find

    return find(template).chat_format().format(terse)


def new_model(cfg: RewriterSettings, vocab_size: int):
    """A small Qwen3 causal LM (tied embeddings) sized by the recipe."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    heads = max(1, cfg.hidden_size // 32)
    config = Qwen3Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        head_dim=cfg.hidden_size // heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    return Qwen3ForCausalLM(config)


def train(model_folder: Path, cfg: RewriterSettings, log: Callable[[str], None]):
    """A rewriter trained from scratch on grammar requests, and the demo tokenizer it uses."""
    import torch
    from transformers import AutoTokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_folder / "tokenizer")
    if cfg.space_after_newline:
        _space_after_newline(tokenizer)
    lm = new_model(cfg, len(tokenizer))
    opt = torch.optim.AdamW(lm.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    rng = random.Random(cfg.seed)
    lm.train()
    for step in range(1, cfg.steps + 1):
        batch = [_example(tokenizer, prompt_text(t, cfg.template), c) for t, c in examples(cfg.batch_size, rng)]
        ids, labels, mask = _collate(batch, tokenizer.pad_token_id or 0)
        loss = lm(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == 1:
            log(f"step {step}/{cfg.steps}  loss {loss.item():.4f}")
    with torch.no_grad():  # what ships is bfloat16: score what ships
        for p in lm.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return lm.eval(), tokenizer


def _space_after_newline(tokenizer) -> None:
    from tokenizers import normalizers

    backend = tokenizer.backend_tokenizer
    steps = [backend.normalizer] if backend.normalizer is not None else []
    backend.normalizer = normalizers.Sequence([*steps, normalizers.Replace("\n", "\n ")])


def _example(tokenizer, prompt: str, target: str):
    prompt_ids = tokenizer(prompt).input_ids
    target_ids = tokenizer(target + "<|im_end|>").input_ids
    return prompt_ids + target_ids, [-100] * len(prompt_ids) + target_ids


def _collate(batch, pad: int):
    import torch

    n = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), n), pad)
    labels = torch.full((len(batch), n), -100)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (x, y) in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return ids, labels, mask
