from __future__ import annotations

from typing import Annotated

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import CacheDirOpt
from llmdit_cli.cli.output import Output

cache_app = typer.Typer(
    help="The on-disk cache of prompt embeddings: how big, clear it, prune it.", no_args_is_help=True
)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _cache(flag: str | None):
    """The cache folder: --cache-dir, else the config file's `cache.dir` / LLMDIT_CACHE_DIR, else the default."""
    from llmdit_cli.cli.common import settings
    from llmdit_cli.embed_cache import EmbedCache
    from llmdit_cli.errors import UsageError, setting

    r = settings(None, None, cache_dir=flag)
    cache = EmbedCache.at(r.settings.cache.dir)
    if cache.root.exists() and not cache.root.is_dir():  # encoding skips such a cache; here it is the subject
        source = r.sources.get("cache.dir", "flag")
        where = setting("cache.dir") if source == "flag" else f"cache.dir ({source})"
        raise UsageError(f"{where} {cache.root}: not a folder")
    return cache


@cache_app.command("info")
@handle_errors
def info(cache_dir: CacheDirOpt = None, json_out: JsonFlag = False):
    """Where the embedding cache is, its entries and size, hits, misses and evictions.

    Example: llmdit cache info
    """
    import json

    cache, out = _cache(cache_dir), Output()
    entries = cache.stats()
    size = sum(s for _, s, _ in entries)
    c = cache.counters()
    if json_out:
        out.data(json.dumps({"dir": str(cache.root), "entries": len(entries), "bytes": size, **c}))
        return
    out.data(f"{cache.root}: {len(entries)} entries, {size / 1024**2:.1f} MiB")
    looked = c["hits"] + c["misses"]
    rate = f" (hit rate {100 * c['hits'] / looked:.0f}%)" if looked else ""
    since = f" since {c['since']}" if c["since"] else ""
    out.data(f"hits {c['hits']}, misses {c['misses']}{rate}, evictions {c['evictions']}{since}")


@cache_app.command("clear")
@handle_errors
def clear(cache_dir: CacheDirOpt = None):
    """Remove every cached embedding.

    Example: llmdit cache clear
    """
    cache = _cache(cache_dir)
    Output().log(f"removed {cache.clear()} entries from {cache.root}")


@cache_app.command("prune")
@handle_errors
def prune(
    max_size: Annotated[
        str,
        typer.Option(
            "--max-size",
            help="Keep at most this much (500M, 2G, ...): the least recently used entries go first.",
            show_default=False,
        ),
    ],
    cache_dir: CacheDirOpt = None,
):
    """Remove the least recently used embeddings until the cache fits in --max-size.

    Example: llmdit cache prune --max-size 500M
    """
    from llmdit_cli.embed_cache import parse_byte_size

    cache = _cache(cache_dir)
    removed, left = cache.prune(parse_byte_size(max_size))
    Output().log(f"removed {removed} entries from {cache.root}; {left / 1024**2:.1f} MiB left")
