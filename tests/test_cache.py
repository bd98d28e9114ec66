"""The on-disk embedding cache: hits give the same embeddings without loading the text encoder,
the key follows what changes an embedding, concurrent writers leave one whole entry, and the
`cache` command reports, clears and prunes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error, max_diff, pixels
from safetensors.torch import load_file

PROMPT = "a red circle on a blue background"


@pytest.fixture
def loads(monkeypatch):
    """The components each ModelHandle.pipeline call asks for (a spy, the real loader runs)."""
    from llmdit_cli.models.loading import ModelHandle

    asked: list[str] = []
    original = ModelHandle.pipeline

    def pipeline(self, *needed):
        asked.extend(needed)
        return original(self, *needed)

    monkeypatch.setattr(ModelHandle, "pipeline", pipeline)
    return asked


def entries() -> list[Path]:
    return sorted(Path(os.environ["XDG_CACHE_HOME"], "llmdit", "embeds").glob("*/*.safetensors"))


def test_a_hit_gives_the_same_embeddings_without_loading_the_text_encoder(cli, loads):
    assert cli("encode", PROMPT, "--model", "demo", "-o", "miss.embeds.safetensors").code == 0
    assert "text_encoder" in loads and len(entries()) == 2  # the prompt and the negative prompt
    loads.clear()
    assert cli("encode", PROMPT, "--model", "demo", "-o", "hit.embeds.safetensors").code == 0
    assert loads == []  # no component at all
    uncached = cli("encode", PROMPT, "--model", "demo", "--no-cache", "-o", "off.embeds.safetensors")
    assert uncached.code == 0 and "text_encoder" in loads
    hit, miss, off = (load_file(f"{n}.embeds.safetensors") for n in ("hit", "miss", "off"))
    for key in miss:
        assert (hit[key] == miss[key]).all() and (off[key] == miss[key]).all()


def test_generate_reads_the_cache_and_makes_the_same_pixels(cli, loads):
    args = ["generate", PROMPT, "--model", "demo", "--seed", 5]
    assert cli(*args, "-o", "first.png").code == 0
    loads.clear()
    assert cli(*args, "-o", "second.png").code == 0
    assert "text_encoder" not in loads and "transformer" in loads
    assert cli(*args, "--no-cache", "-o", "fresh.png").code == 0
    assert (
        max_diff(pixels("first.png"), pixels("second.png")) == max_diff(pixels("first.png"), pixels("fresh.png")) == 0
    )


def test_the_key_follows_what_changes_an_embedding(cli, tiny_model):
    base = ["encode", PROMPT, "--model", "demo", "-o", "e.embeds.safetensors"]
    assert cli(*base).code == 0
    seen = len(entries())
    for extra in (
        ["--hidden-layer", "-1"],
        ["--max-length", "8"],
        ["--system-prompt", "S"],
        ["--template", "concise-cleanup"],
    ):
        assert cli(*base, *extra).code == 0
        assert len(entries()) > seen, extra
        seen = len(entries())
    assert cli("encode", PROMPT, "--model", tiny_model, "-o", "t.embeds.safetensors").code == 0
    assert len(entries()) > seen  # another text encoder
    assert cli(*base).code == 0 and len(entries()) == seen + 2  # the first settings again: hits


def test_a_damaged_entry_is_a_miss_and_is_written_again(cli):
    assert cli("encode", PROMPT, "--model", "demo", "-o", "a.embeds.safetensors").code == 0
    for entry in entries():
        entry.write_bytes(b"not a safetensors file")
    assert cli("encode", PROMPT, "--model", "demo", "-o", "b.embeds.safetensors").code == 0
    a, b = load_file("a.embeds.safetensors"), load_file("b.embeds.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    assert all(e.read_bytes() != b"not a safetensors file" for e in entries())


def test_two_processes_writing_the_same_entries_leave_whole_files(tmp_path):
    cmd = [sys.executable, "-m", "llmdit_cli", "encode", PROMPT, "--model", "demo", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [
        subprocess.Popen([*cmd, "-o", f"p{i}.embeds.safetensors"], cwd=tmp_path, env=env, stderr=subprocess.PIPE)
        for i in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode()
    found = entries()
    assert len(found) == 2 and not list(found[0].parent.glob(".*.tmp"))
    a, b = load_file(tmp_path / "p0.embeds.safetensors"), load_file(tmp_path / "p1.embeds.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    for entry in found:
        assert load_file(entry)["prompt_embeds.0"].ndim == 2


def test_cache_command(cli, tmp_path, monkeypatch):
    folder = tmp_path / "elsewhere"
    assert cli("encode", PROMPT, "--model", "demo", "--cache-dir", folder, "-o", "e.embeds.safetensors").code == 0
    info = json.loads(cli("cache", "info", "--cache-dir", folder, "--json").stdout)
    assert info["entries"] == 2 and info["bytes"] > 0 and info["dir"] == str(folder)
    r = cli("cache", "prune", "--max-size", "1", "--cache-dir", folder)
    assert r.code == 0 and "removed 2 entries" in r.stderr
    assert cli("encode", PROMPT, "--model", "demo", "--cache-dir", folder, "-o", "e.embeds.safetensors").code == 0
    assert "removed 2 entries" in cli("cache", "clear", "--cache-dir", folder).stderr
    assert json.loads(cli("cache", "info", "--cache-dir", folder, "--json").stdout)["entries"] == 0
    assert_one_line_error(cli("cache", "prune", "--max-size", "lots"), "--max-size lots: expected a size")
    (tmp_path / "file").write_text("")
    for command in ("info", "clear"):
        assert_one_line_error(cli("cache", command, "--cache-dir", tmp_path / "file"), "--cache-dir", "not a folder")
    monkeypatch.setenv("LLMDIT_CACHE_DIR", str(tmp_path / "file"))
    assert_one_line_error(cli("cache", "info"), "cache.dir (", "not a folder")


def test_a_cache_that_cannot_be_written_is_skipped_with_a_hint(cli, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would be")
    r = cli("encode", PROMPT, "--model", "demo", "--cache-dir", blocker, "-o", "e.embeds.safetensors")
    assert r.code == 0, r.stderr
    assert r.stderr.count("cannot be written") == 1 and "--cache-dir" in r.stderr


def test_cache_info_counts_hits_misses_and_evictions(cli):
    def info() -> dict:
        r = cli("cache", "info", "--json")
        assert r.code == 0, r.stderr
        return json.loads(r.stdout)

    assert info()["hits"] == 0 and info()["since"] is None
    assert cli("encode", PROMPT, "--model", "demo", "-o", "a.embeds.safetensors").code == 0
    first = info()
    assert (first["hits"], first["misses"], first["evictions"]) == (0, 2, 0)  # the prompt and the negative one
    assert cli("encode", PROMPT, "--model", "demo", "-o", "b.embeds.safetensors").code == 0
    assert info()["hits"] == 2
    assert cli("cache", "prune", "--max-size", "0").code == 0
    assert info()["evictions"] == 2
    text = cli("cache", "info").stdout
    assert "hits 2, misses 2 (hit rate 50%), evictions 2 since " in text


def test_counts_gather_in_the_process_and_are_written_when_read_or_at_exit(tmp_path):
    import subprocess
    import sys

    from llmdit_cli.embed_cache import EmbedCache

    cache = EmbedCache.at(str(tmp_path))
    written = lambda: json.loads((tmp_path / "stats.json").read_text())  # noqa: E731
    cache.count(hits=1)  # the first count of a process is written at once
    assert written()["hits"] == 1
    cache.count(hits=2, misses=1)  # within the second: gathered, not yet written
    assert (written()["hits"], written()["misses"]) == (1, 0)
    assert (cache.counters()["hits"], cache.counters()["misses"]) == (3, 1) and written()["hits"] == 3
    code = f"from llmdit_cli.embed_cache import EmbedCache as C; c = C.at({str(tmp_path)!r}); c.count(hits=1); c.count(hits=5)"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert written()["hits"] == 9  # the second count waited for the process to end
