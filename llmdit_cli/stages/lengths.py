"""Caption lengths: bring an embedding `[seq, hidden]` within the model's caption limit (long-prompt
modes), or to exactly N tokens (caption fill modes). Work is done in float32 and the result is
returned in the input's dtype, so bfloat16 and float16 embeddings behave like float32 ones.

Long-prompt modes (applied when `seq` is above the limit):

- `error`: refuse; `truncate`: keep the first `limit` tokens;
- `interpolate`: resample the sequence linearly to `limit` positions;
- `pool`: average equal runs of tokens (adaptive average pooling) into `limit` tokens;
- `attention_pool`: the same runs, each averaged with weights softmax(x . q / sqrt(d)), where q is
  the mean token of the whole prompt, so tokens that agree with the prompt's gist weigh more.

Caption fill modes (every embedding becomes exactly N tokens; longer ones keep their first N):

- `content_only`: no filler: the content repeated from its first token until N;
- `pad_end_zero` / `pad_start_zero`: zero vectors after / before the content;
- `pad_middle_zero`: zero vectors between the first and second half of the content;
- `pad_both`: the content centred, zero vectors before and after it (the odd one after);
- `pad_end_mean`: the mean of the content tokens, repeated after it;
- `filler_repeat`: the last content token (the end of the chat template), repeated after it.
"""

from __future__ import annotations

from typing import get_args

from llmdit_cli.config import EncoderSettings

# The modes are the settings' choices (config.py), read here so the two never drift apart.
LONG_MODES = get_args(EncoderSettings.model_fields["long_prompt_mode"].annotation)
FILL_MODES = get_args(EncoderSettings.model_fields["caption_fill"].annotation)


def fit_length(x, limit: int, mode: str):
    """`x` with at most `limit` tokens."""
    import torch
    import torch.nn.functional as F

    seq = x.shape[0]
    if seq <= limit:
        return x
    if mode == "truncate":
        return x[:limit]
    if mode == "error":
        from llmdit_cli.errors import UsageError, setting

        raise UsageError(
            f"a prompt has {seq} tokens, but the model takes at most {limit}; shorten it, pass "
            f"{setting('encoder.max_length')} {limit}, or choose a {setting('encoder.long_prompt_mode')}"
        )
    v = x.float()
    if mode == "interpolate":
        out = F.interpolate(v.T[None], size=limit, mode="linear", align_corners=True)[0].T
    elif mode == "pool":
        out = F.adaptive_avg_pool1d(v.T[None], limit)[0].T
    elif mode == "attention_pool":
        query = v.mean(dim=0)
        scores = (v @ query) / v.shape[1] ** 0.5
        out = torch.stack([_weighted(v[a:b], scores[a:b]) for a, b in _runs(seq, limit)])
    else:
        raise ValueError(f"unknown long-prompt mode {mode}")
    return out.to(x.dtype)


def _runs(seq: int, n: int) -> list[tuple[int, int]]:
    """`n` contiguous runs covering 0..seq, as adaptive pooling splits them."""
    return [((i * seq) // n, -(-((i + 1) * seq) // n)) for i in range(n)]


def _weighted(tokens, scores):
    import torch

    w = torch.softmax(scores, dim=0)
    return (w[:, None] * tokens).sum(dim=0)


def fill_length(x, n: int, mode: str):
    """`x` with exactly `n` tokens (its first `n` when longer; filled as `mode` says when shorter)."""
    import torch

    content = x[:n]
    k = content.shape[0]
    if k == n:
        return content
    missing = n - k
    zeros = torch.zeros(missing, x.shape[1], dtype=x.dtype, device=x.device)
    if mode == "pad_end_zero":
        return torch.cat([content, zeros])
    if mode == "pad_start_zero":
        return torch.cat([zeros, content])
    if mode == "pad_middle_zero":
        half = k // 2
        return torch.cat([content[:half], zeros, content[half:]])
    if mode == "pad_both":
        before = missing // 2
        return torch.cat([zeros[:before], content, zeros[before:]])
    if mode == "pad_end_mean":
        mean = content.float().mean(dim=0, keepdim=True).to(x.dtype)
        return torch.cat([content, mean.expand(missing, -1)])
    if mode == "filler_repeat":
        return torch.cat([content, content[-1:].expand(missing, -1)])
    if mode == "content_only":
        reps = -(-n // k)
        return content.repeat(reps, 1)[:n]
    raise ValueError(f"unknown caption fill mode {mode}")
