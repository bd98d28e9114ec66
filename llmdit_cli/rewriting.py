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
        text = _THINK.sub(" ", text)
    text = _SPECIAL.sub(" ", text)
    text = " ".join(text.split())
    return text.strip().strip('"').strip("'").strip()


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


def generate_local(lm, tokenizer, text: str, sampling: Sampling, device) -> str:
    """Sample a reply to the formatted chat `text` (seeded: the same seed gives the same reply)."""
    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
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
    with _RNG, torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(sampling.seed)
        out = lm.generate(ids, attention_mask=torch.ones_like(ids), **options)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=False)


def generate_api(
    url: str, model: str, key: str | None, system: str, prompt: str, sampling: Sampling, timeout: float
) -> str:
    """One chat completion from an OpenAI-compatible server (`url` ends in /v1, as the `openai`
    client's base_url)."""
    import socket
    import urllib.error
    import urllib.request

    body = {
        "model": model,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": sampling.seed,
    }
    import http.client

    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    where = f"--api-url {url}"
    if not url.lower().startswith(("http://", "https://")):
        raise UsageError(f"{where}: needs http:// or https:// (the base URL ending in /v1)")
    try:
        request = urllib.request.Request(url.rstrip("/") + "/chat/completions", json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise InputError(f"{where}: HTTP {exc.code} {exc.reason}{_server_message(exc)}") from None
    except TimeoutError:
        raise InputError(f"{where}: no reply within {timeout:g} s (--timeout)") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise InputError(f"{where}: no reply within {timeout:g} s (--timeout)") from None
        raise InputError(f"{where}: cannot connect ({getattr(reason, 'strerror', None) or reason})") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise InputError(f"{where}: request failed ({type(exc).__name__}: {exc})") from None
    try:
        content = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise InputError(f"{where}: the reply is not a chat completion (no choices[0].message.content)") from None
    if not isinstance(content, str):
        raise InputError(f"{where}: the reply's message content is not text")
    return content


def _server_message(exc) -> str:
    try:
        detail = json.loads(exc.read())["error"]["message"]
        return f": {str(detail).splitlines()[0][:200]}"
    except Exception:  # noqa: BLE001 - the status line alone is the message then
        return ""
