"""Calls to an llmdit server (or any OpenAI-compatible one): one POST, its failures as one line.

`where` names the option the URL came from (`--api-url URL`), so every message says which flag to
fix. The base URL ends in /v1, as the `openai` client's base_url.
"""

from __future__ import annotations

import json
from typing import Any

from llmdit_cli.errors import InputError, UsageError


class RemoteError(InputError):
    """The server could not be reached, or answered with an error."""


def check_base_url(url: str, where: str) -> None:
    if not url.lower().startswith(("http://", "https://")):
        raise UsageError(f"{where}: needs http:// or https:// (the base URL ending in /v1)")


def post_json(url: str, path: str, body: dict[str, Any], key: str | None, timeout: float, where: str) -> bytes:
    """POST `body` as JSON to `url` + `path` and return the reply's bytes (HTTP errors, timeouts,
    refused connections: one-line InputErrors that quote the server's own error message)."""
    import http.client
    import socket
    import urllib.error
    import urllib.request

    check_base_url(url, where)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    try:
        request = urllib.request.Request(url.rstrip("/") + path, json.dumps(body).encode(), headers)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise RemoteError(f"{where}: HTTP {exc.code} {exc.reason}{server_message(exc)}") from None
    except TimeoutError:
        raise RemoteError(f"{where}: no reply within {timeout:g} s (--timeout)") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            raise RemoteError(f"{where}: no reply within {timeout:g} s (--timeout)") from None
        raise RemoteError(f"{where}: cannot connect ({getattr(reason, 'strerror', None) or reason})") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise RemoteError(f"{where}: request failed ({type(exc).__name__}: {exc})") from None


def server_message(exc) -> str:
    """': message' from an OpenAI-style JSON error body, or '' when there is none."""
    try:
        detail = json.loads(exc.read())["error"]["message"]
        return f": {str(detail).splitlines()[0][:200]}"
    except Exception:  # noqa: BLE001 - the status line alone is the message then
        return ""


def encode_remote(
    url: str,
    prompts: list[str],
    settings: dict[str, Any],
    with_negative: bool,
    key: str | None,
    timeout: float,
    where: str,
) -> bytes:
    """An embeds stage file made by an llmdit server's text encoder (`POST /v1/llmdit/encode`)."""
    body = {"prompts": prompts, "with_negative": with_negative, "llmdit": settings}
    return post_json(url, "/llmdit/encode", body, key, timeout, where)
