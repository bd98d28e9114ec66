"""Training the demo's rewriting head (scripts/train_demo_rewriter.py): synthetic terse requests
and their demo captions, and a loop that trains only what conditioning at hidden state -2 never
reads (the last layer, the final norm, an untied LM head)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from llmdit_cli.tomlfiles import StrictModel, load_toml, validated
from llmdit_cli.train import shapes

# Terse ways to ask for a shape; `{b}` is the background colour. Forms without it mean black.
WITH_BACKGROUND = [
    "{s}, {c}, on {b}",
    "{c} {s} on {b}",
    "{s} in {c} over {b}",
    "draw a {c} {s} on a {b} background",
    "{c} {s}, {b} background",
    "a {c} {s} please, {b} background",
]
WITHOUT_BACKGROUND = ["{c} {s}", "a {c} {s} please", "{s}, {c}", "one {c} {s}"]


class RewriterSettings(StrictModel):
    template: str = "demo-caption"
    steps: int = 600
    batch_size: int = 16
    lr: float = 3e-3
    seed: int = 0


def load_settings(path: str) -> RewriterSettings:
    return validated(RewriterSettings, load_toml(Path(path), "recipe"), path)


def pairs(cfg: RewriterSettings, held_out: bool, rng: random.Random) -> list[tuple[str, str]]:
    """(terse request, caption) for the held-out combinations or the others, every phrasing."""
    hidden = shapes.held_out()
    chosen = [c for c in shapes.combos() if (c in hidden) == held_out]
    out = []
    for shape, colour, background in chosen:
        forms = WITH_BACKGROUND + (WITHOUT_BACKGROUND if background == "black" else [])
        for form in forms:
            out.append((form.format(s=shape, c=colour, b=background), shapes.caption(shape, colour, background)))
    rng.shuffle(out)
    return out


def prompt_text(terse: str, template: str = "demo-caption") -> str:
    from llmdit_cli.prompt_templates import find

    return find(template).chat_format().format(terse)


def train(model_folder: Path, cfg: RewriterSettings, log: Callable[[str], None]):
    """The demo text encoder with a trained rewriting head, and its tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_folder / "tokenizer")
    lm = Qwen3ForCausalLM.from_pretrained(model_folder / "text_encoder", dtype=torch.float32)
    lm.config.tie_word_embeddings = False
    lm.lm_head = torch.nn.Linear(lm.config.hidden_size, lm.config.vocab_size, bias=False)
    lm.lm_head.weight.data.copy_(lm.model.embed_tokens.weight.data)
    for p in lm.parameters():
        p.requires_grad = False
    trained = [*lm.model.layers[-1].parameters(), *lm.model.norm.parameters(), *lm.lm_head.parameters()]
    for p in trained:
        p.requires_grad = True
    data = pairs(cfg, held_out=False, rng=random.Random(cfg.seed))
    encoded = [_example(tokenizer, prompt_text(t, cfg.template), target) for t, target in data]
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    rng = random.Random(cfg.seed)
    lm.train()
    for step in range(1, cfg.steps + 1):
        batch = rng.sample(encoded, min(cfg.batch_size, len(encoded)))
        ids, labels, mask = _collate(batch, tokenizer.pad_token_id or 0)
        loss = lm(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == 1:
            log(f"step {step}/{cfg.steps}  loss {loss.item():.4f}")
    with torch.no_grad():  # what ships is bfloat16: score what ships
        for p in trained:
            p.copy_(p.to(torch.bfloat16).float())
    return lm.eval(), tokenizer


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
