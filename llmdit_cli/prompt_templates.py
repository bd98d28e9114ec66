"""Prompt templates: Markdown files whose YAML front matter names and describes them and whose body
is the system prompt put before a user's prompt (Qwen3 chat format, see `prompts.ChatFormat`).

Built-ins ship inside the package (`llmdit_cli/templates/`, which the repository's top-level
`templates/` points to); folders given with `--templates-dir` / `templates.dir` come
first, so a user's template overrides a built-in of the same name.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from llmdit_cli.errors import InputError, UsageError, setting
from llmdit_cli.tomlfiles import StrictModel

BUILTIN = Path(__file__).resolve().parent / "templates"


class FrontMatter(StrictModel):
    name: str
    description: str
    category: str
    model: str = "z-image"
    enable_thinking: bool = True
    thinking_content: str | None = None
    assistant_content: str | None = None


@dataclass(frozen=True)
class Template:
    meta: FrontMatter
    system: str
    source: Path
    sha256: str

    @property
    def name(self) -> str:
        return self.meta.name

    def chat_format(self):
        """The chat formatting this template alone gives (system prompt, think block, assistant text)."""
        from llmdit_cli.prompts import ChatFormat

        m = self.meta
        return ChatFormat(self.system, m.thinking_content, m.enable_thinking, m.assistant_content)

    def record(self) -> dict[str, str]:
        """What embeddings and PNGs record about the template they were made with."""
        return {"name": self.name, "sha256": self.sha256}


def parse(path: Path) -> Template:
    """A template file, checked: front matter between `---` lines, every field valid, a body."""
    import yaml

    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read template ({getattr(exc, 'strerror', None) or exc})") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in [line.strip() for line in lines[1:]]:
        raise InputError(f"{path}: no front matter (the file must start with a --- block of YAML)")
    end = 1 + [line.strip() for line in lines[1:]].index("---")
    try:
        data = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: front matter is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: front matter must be YAML fields (name: ..., description: ...)")
    try:
        meta = FrontMatter.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(x) for x in err["loc"])
        problem = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise InputError(f"{path}: front matter field '{field}': {problem}") from None
    if meta.name != path.stem:
        raise InputError(f"{path}: front matter field 'name': '{meta.name}' differs from the file name")
    body = "\n".join(lines[end + 1 :]).strip()
    if not body:
        raise InputError(f"{path}: the template has no body (its system prompt)")
    return Template(meta, body, path, hashlib.sha256(raw).hexdigest())


def folders(extra: list[str] | None = None) -> list[Path]:
    """Where templates are looked up, first match wins: the user's folders, then the built-ins."""
    out = []
    for folder in extra or []:
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise UsageError(
                f"{setting('templates.dir')} {folder}: {'not a folder' if path.exists() else 'no such folder'}"
            )
        out.append(path)
    return [*out, BUILTIN]


def available(extra: list[str] | None = None) -> dict[str, Template]:
    """Every template by name (a user's folder overrides a built-in of the same name)."""
    found: dict[str, Template] = {}
    for folder in reversed(folders(extra)):
        for path in sorted(folder.rglob("*.md")):
            if path.name.lower() != "readme.md":
                template = parse(path)
                found[template.name] = template
    return dict(sorted(found.items()))


def find(name: str, extra: list[str] | None = None) -> Template:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*", name):
        raise UsageError(
            f"{setting('encoder.template')} {name}: a template is named by its file name without .md "
            f"(letters, digits, - _ .); `llmdit templates list` shows them"
        )
    for folder in folders(extra):
        for path in sorted(folder.rglob("*.md")):
            if path.stem == name:
                return parse(path)
    import difflib

    close = difflib.get_close_matches(name, list(available(extra)), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; `llmdit templates list` shows them"
    raise UsageError(f"{setting('encoder.template')} {name}: no such template{hint}")
