"""Prompt rewriting with a rewriter template: by the text encoder's own language model (Qwen3 as a
chat model; one copy of the weights serves encoding and rewriting), or by any OpenAI-compatible
chat-completions server.

The reply is cleaned to one line: the think block is dropped (unless kept), special tokens and
surrounding quotes go, whitespace collapses.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass

from llmdit_cli.errors import InputError, ModelError, UsageError

_RNG = threading.Lock()  # sampling seeds torch's global generator: one sampler at a time
_THINK = re.compile(r"<think>.*?(</think>|$)", re.S)
_SPECIAL = re.compile(r"<\|[^|>]*\|>")
# Control characters and a terminal's escape sequences (CSI, OSC): never part of a prompt.
_CONTROL = re.compile(r"(\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
DEFAULT_TEMPLATE = "general-enhancer"


def template_for(r) -> str:
    """The rewriter template a plan names: its own, else the model family's (filled by the
    engine), else the general one (a chat server's rewrite, where no model family is known)."""
    return r.settings.rewriter.template or DEFAULT_TEMPLATE


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 0  # 0: off
    min_p: float = 0.0  # 0: off
    max_new_tokens: int = 256
    seed: int = 0

    def check(self) -> None:
        if self.temperature < 0:
            raise UsageError(f"--temperature {self.temperature}: must be 0 (greedy) or positive")
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.top_k < 0:
            raise UsageError(f"--top-k {self.top_k}: must be 0 (off) or positive")
        if not 0 <= self.min_p < 1:
            raise UsageError(f"--min-p {self.min_p}: must be in [0, 1)")
        if self.max_new_tokens < 1:
            raise UsageError(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")


def clean(reply: str, keep_thinking: bool = False) -> str:
    """The rewritten prompt alone, on one line."""
    text = reply.split("<|im_end|>")[0]
    if not keep_thinking:
        text = _THINK.sub(" ", text).rpartition("</think>")[2]  # a close without its open: all before is thinking
    text = _CONTROL.sub(" ", _SPECIAL.sub(" ", text))
    text = " ".join(text.split())
    return text.strip().strip('"').strip("'").strip()


def reply_text(reply: str) -> str:
    """A raw reply up to its end-of-turn token, without special tokens (for a chat API)."""
    return _SPECIAL.sub("", reply.split("<|im_end|>")[0]).strip()


class TextPieces:
    """A transformers streamer that hands `on_text` each new piece of the reply's text (special
    tokens left out; a piece ends on a whole character). Each piece is what `reply_text` of the
    reply so far adds, so the pieces join to `reply_text` of the whole reply: whitespace at either
    end is held back until text follows it."""

    def __init__(self, tokenizer, on_text):
        self.tokenizer, self.on_text = tokenizer, on_text
        self.ids: list[int] = []
        self.sent = ""
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        self._send(final=False)

    def end(self) -> None:
        self._send(final=True)

    def _send(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=False)
        if text.endswith("\ufffd") and not final:  # a character split across tokens: wait for the rest
            return
        ready = reply_text(text)  # the same cleaning as the whole reply's
        if len(ready) > len(self.sent) and ready.startswith(self.sent):
            self.on_text(ready[len(self.sent) :])
            self.sent = ready


def causal_lm(text_encoder):
    """The language model over `text_encoder`'s own weights: itself when it has an LM head; for a
    bare decoder whose embeddings are tied (Qwen3-4B's are), a causal-LM shell around it whose head
    is those embeddings (no second copy)."""
    if hasattr(text_encoder, "lm_head"):
        return text_encoder
    config = text_encoder.config
    if not getattr(config, "tie_word_embeddings", False):
        raise ModelError(
            "the text encoder has no language-model head (and untied embeddings), so it cannot "
            "rewrite; use --api-url with a chat server"
        )
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(config)
    lm.model = text_encoder
    lm.lm_head.weight = text_encoder.get_input_embeddings().weight
    return lm.eval()


def generate_local(lm, tokenizer, text: str, sampling: Sampling, device, streamer=None, should_stop=None) -> str:
    """Sample a reply to the formatted chat `text` (seeded: the same seed gives the same reply).
    `streamer` (transformers' streamer protocol) receives the tokens as they come; `should_stop()`
    returning True ends the reply early (a client that went away)."""
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return sample(lm, tokenizer, inputs, sampling, streamer, should_stop)


def sample(lm, tokenizer, inputs: dict, sampling: Sampling, streamer=None, should_stop=None) -> str:
    """`lm.generate` on prepared inputs (text, or text and image for a VL model), seeded, up to
    the end of the turn; the reply's text with its special tokens."""
    import torch

    stops = [i for i in {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id} if isinstance(i, int)]
    options = {
        "do_sample": sampling.temperature > 0,
        "max_new_tokens": sampling.max_new_tokens,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
        "eos_token_id": stops,
    }
    if sampling.temperature > 0:
        options.update(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k or None,
            min_p=sampling.min_p or None,
        )
    if streamer is not None:
        options["streamer"] = streamer
    if should_stop is not None:
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), bool(should_stop()), device=input_ids.device)

        options["stopping_criteria"] = StoppingCriteriaList([_Stop()])
    prompt_length = inputs["input_ids"].shape[1]
    with _RNG, torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(sampling.seed)
        out = lm.generate(**inputs, **options)
    return tokenizer.decode(out[0, prompt_length:], skip_special_tokens=False)


def image_data_url(path: str) -> str:
    """An image file as a data: URL (what chat APIs take for image content)."""
    import base64
    import mimetypes
    from pathlib import Path

    kind = mimetypes.guess_type(path)[0] or "image/png"
    return f"data:{kind};base64," + base64.b64encode(Path(path).read_bytes()).decode()


def generate_api(
    url: str,
    model: str,
    key: str | None,
    system: str,
    prompt: str,
    sampling: Sampling,
    timeout: float,
    image_url: str | None = None,
) -> str:
    """One chat completion from an OpenAI-compatible server (`url` ends in /v1, as the `openai`
    client's base_url); `image_url` (a data: URL) goes with the prompt as image content."""
    from llmdit_cli.remote import post_json

    content: str | list = prompt
    if image_url:
        content = [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": prompt}]
    body = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": content}],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
    }
    where = f"--api-url {url}"
    raw = post_json(url, "/chat/completions", body, key, timeout, where)
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise InputError(f"{where}: the reply is not a chat completion (no choices[0].message.content)") from None
    if not isinstance(content, str):
        raise InputError(f"{where}: the reply's message content is not text")
    return content
