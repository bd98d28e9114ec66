"""Prompt input and Qwen3 chat formatting.

The default formatting equals what stock `ZImagePipeline.encode_prompt` feeds the text encoder:
`<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`. The knobs add a system turn,
a think block (empty with `enable_thinking=False`, as Qwen3's own template does) and assistant text.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from llmdit_cli.errors import InputError, UsageError


@dataclass(frozen=True)
class ChatFormat:
    system_prompt: str | None = None
    thinking_content: str | None = None
    enable_thinking: bool = True
    assistant_content: str | None = None

    def format(self, prompt: str) -> str:
        parts = []
        if self.system_prompt:
            parts.append(_turn("system", self.system_prompt))
        parts.append(_turn("user", prompt))
        parts.append("<|im_start|>assistant\n")
        if self.thinking_content:
            parts.append(f"<think>\n{self.thinking_content}\n</think>\n\n")
        elif not self.enable_thinking:
            parts.append("<think>\n\n</think>\n\n")
        if self.assistant_content:
            parts.append(self.assistant_content)
        return "".join(parts)


def chat_text(messages: list[tuple[str, str]], enable_thinking: bool = True) -> str:
    """A whole conversation ((role, content) pairs) in Qwen3's chat format, ending where the
    assistant's reply starts; with thinking off, the empty think block Qwen3's template adds."""
    parts = [_turn(role, content) for role, content in messages]
    parts.append("<|im_start|>assistant\n")
    if not enable_thinking:
        parts.append("<think>\n\n</think>\n\n")
    return "".join(parts)


def _turn(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


def collect_prompts(args: list[str] | None, file: str | None) -> list[str]:
    """Prompts from arguments, `--file` (one per line) and `-` (stdin, one per line)."""
    prompts: list[str] = []
    for arg in args or []:
        if arg == "-":
            prompts.extend(_lines(_read_stdin(), "stdin"))
        else:
            prompts.append(arg)
    if file:
        path = Path(file)
        if not path.is_file():
            raise InputError(f"--file {file}: {'is a folder; give a text file' if path.is_dir() else 'no such file'}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--file {file}: cannot read as UTF-8 text ({exc})") from None
        prompts.extend(_lines(text, f"--file {file}"))
    return prompts


def _read_stdin() -> str:
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("prompt '-' reads stdin, but stdin is a terminal: pipe prompts in")
    # The bytes, decoded strictly here: under a C or POSIX locale Python's text stdin turns bad
    # bytes into lone surrogates, which a tokenizer refuses later naming no input.
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"stdin: line {line} is not UTF-8 text (byte {exc.start + 1} of the input)") from None
    if not text.strip():
        raise InputError("stdin is empty: expected prompts, one per line")
    return text


def _lines(text: str, where: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{where}: holds no prompt")
    return lines


def slug(text: str, limit: int = 40) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text)
    out = "-".join(p for p in out.split("-") if p)
    return out[:limit].rstrip("-") or "image"
