"""Exceptions -> one line on stderr and an exit code. `LLMDIT_DEBUG=1` shows the traceback."""

from __future__ import annotations

import functools
import os
import sys
import warnings

from llmdit_cli.errors import LlmditError

# Types not raised by llmdit itself, with the message shown for them.
FOREIGN: list[tuple[type, str, int]] = [
    (KeyboardInterrupt, "interrupted", 130),
    (MemoryError, "out of memory", 1),
    (BrokenPipeError, "output pipe closed", 1),
]


def flag_for(key: str) -> str:
    """A setting key as the CLI names it: its option (`slg.layers` -> `--slg-layers`, `lora.loras` -> `--lora`)."""
    from llmdit_cli.cli.options import flag_of
    from llmdit_cli.config import KEY_FLAG

    return flag_of(KEY_FLAG.get(key, key))


def in_flags(text: str) -> str:
    """A library message with its marked setting keys named as flags."""
    from llmdit_cli.errors import render

    return render(text, flag_for)


def message_for(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, LlmditError):
        return exc.render(flag_for), exc.exit_code
    for kind, text, code in FOREIGN:
        if isinstance(exc, kind):
            return text, code
    lines = str(exc).strip().splitlines()
    detail = lines[0] if lines else ""
    return f"unexpected {type(exc).__name__}: {detail} (set LLMDIT_DEBUG=1 for the traceback)", 1


def handle_errors(fn):
    """Run a command body; turn any failure into one line on stderr and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = os.environ.get("LLMDIT_DEBUG") == "1"
        if not debug:
            # Library warnings are for library developers; users get our one-line messages.
            warnings.filterwarnings("ignore")
        import typer

        try:
            return fn(*args, **kwargs)
        except (SystemExit, typer.Exit):  # a command's own exit status, already explained
            raise
        except BaseException as exc:  # noqa: BLE001 - this is the one place that maps them all
            if isinstance(exc, BrokenPipeError) and quiet_closed_stdout():
                # The reader went away (`| head`): not an error, as for any command-line tool.
                raise SystemExit(0) from None
            if debug:
                raise
            text, code = message_for(exc)
            print(f"llmdit: error: {text}", file=sys.stderr, flush=True)
            if isinstance(exc, BrokenPipeError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(code) from None

    return wrapper


def quiet_closed_stdout() -> bool:
    """Whether stdout's reader is gone; if so, stdout goes to /dev/null from now on, so that
    what is still buffered cannot fail again at exit."""
    if not _stdout_closed():
        return False
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return True


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader is gone (poll reports an error on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False
