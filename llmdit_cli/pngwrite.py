"""PNG encoding on every core: 8-bit grey, RGB and RGBA images, with text chunks.

PIL compresses a PNG on one thread; a 1024x1024 image took 0.20 s of an H200 machine's 1.66 s per
`llmdit generate` image (benchmarks/README.md). Here bands of scanlines get PNG's Paeth filter
(vectorised) and are deflated in parallel, each band primed with the 32 KiB before it, so that they
join into one zlib stream (the method of pigz). Files of photographs and noisy images come out
4-13% larger than PIL's (which picks a filter per line), smooth or flat ones about the same; at
1024² on 2 cores it took 0.4 of PIL's time, on one 0.65 (`bench_speed.py png-encode`). The bytes do
not depend on the number of threads. Other modes (palette, 16-bit, 1-bit), empty images and images
carrying a colour profile or transparency are left to PIL.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}  # mode -> (PNG colour type, bytes per pixel)
LEVEL = 6  # zlib's default, as PIL's
BAND_BYTES = 256 * 1024  # filtered bytes per parallel piece (about); smaller ones deflate a little worse
WINDOW = 32 * 1024  # deflate's history: each band is primed with this much of the data before it

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0  # the process the pool's threads belong to
_limit: int | None = None
_pool_lock = threading.Lock()


# Image info PIL's PNG encoder writes as chunks of its own (iCCP, tRNS); such an image is left to it.
PIL_CHUNKS = {"icc_profile", "transparency"}


def encodable(image) -> bool:
    """Whether `encode_png` takes this image: 8-bit L, RGB or RGBA, not empty, no PIL_CHUNKS."""
    return image.mode in COLOUR_TYPES and image.width > 0 and image.height > 0 and not PIL_CHUNKS & set(image.info)


def encode_png(image, texts: list[tuple[str, str]] = ()) -> bytes:
    """`image` (mode L, RGB or RGBA) as PNG bytes, with `texts` as (keyword, text) chunks before
    the pixels: tEXt where the text is Latin-1, else uncompressed UTF-8 iTXt (as PIL writes them)."""
    import numpy as np

    colour, bpp = COLOUR_TYPES[image.mode]
    rows = np.asarray(image, dtype=np.uint8).reshape(image.height, image.width * bpp)
    header = struct.pack(">IIBBBBB", image.width, image.height, 8, colour, 0, 0, 0)
    chunks = [_chunk(b"IHDR", header), *(_text_chunk(k, v) for k, v in texts)]
    chunks.append(_chunk(b"IDAT", _filtered_and_deflated(rows, bpp)))
    chunks.append(_chunk(b"IEND", b""))
    return SIGNATURE + b"".join(chunks)


def _filtered_and_deflated(rows, bpp: int) -> bytes:
    """One zlib stream of the Paeth-filtered scanlines, bands of them filtered and then deflated
    on a thread pool (numpy and zlib release the GIL)."""
    per_band = max(1, BAND_BYTES // (rows.shape[1] + 1))
    starts = range(0, rows.shape[0], per_band)
    pool = _threads()
    bands = list(pool.map(lambda r: _paeth_filtered(rows, r, min(r + per_band, rows.shape[0]), bpp), starts))
    if len(bands) == 1:
        return zlib.compress(bands[0], LEVEL)
    last = len(bands) - 1
    primers = [b""] + [band[-WINDOW:] for band in bands[:-1]]  # a band shorter than WINDOW primes less
    pieces = pool.map(lambda i: _deflate_band(bands[i], primers[i], i == last), range(len(bands)))
    adler = 1
    for band in bands:
        adler = zlib.adler32(band, adler)
    return b"\x78\x9c" + b"".join(pieces) + struct.pack(">I", adler)


def _paeth_filtered(rows, start: int, stop: int, bpp: int) -> bytes:
    """Scanlines start..stop-1 with PNG filter type 4 (Paeth): each byte minus the one of its
    left, upper and upper-left neighbours closest to left + upper - upper-left, mod 256."""
    import numpy as np

    cur = rows[start:stop].astype(np.int16)
    up = np.zeros_like(cur)
    up[1:] = cur[:-1]
    if start > 0:
        up[0] = rows[start - 1]
    left, upper_left = np.zeros_like(cur), np.zeros_like(cur)
    left[:, bpp:], upper_left[:, bpp:] = cur[:, :-bpp], up[:, :-bpp]
    pa, pb, pc = np.abs(up - upper_left), np.abs(left - upper_left), np.abs(left + up - 2 * upper_left)
    predicted = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upper_left))
    out = np.empty((cur.shape[0], cur.shape[1] + 1), dtype=np.uint8)
    out[:, 0] = 4
    out[:, 1:] = (cur - predicted).astype(np.uint8)  # wraps mod 256, as PNG's filter arithmetic
    return out.tobytes()


def _deflate_band(band: bytes, primer: bytes, last: bool) -> bytes:
    """Raw deflate of one band, primed with the data before it; a sync flush ends every band but
    the last on a byte boundary, so the next band's blocks follow it in one stream."""
    if primer:
        compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, zdict=primer)
    else:
        compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)
    return compressor.compress(band) + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _threads() -> ThreadPoolExecutor:
    global _pool, _pool_pid
    with _pool_lock:
        # A pool made before a fork has no threads in the child: the child makes its own.
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="png"), os.getpid()
        return _pool


def workers() -> int:
    """Threads the encoder uses: the cores this process may run on, at most 16 (or the number
    `threads_limited` sets)."""
    return _limit if _limit is not None else min(16, _cores())


@contextmanager
def threads_limited(n: int):
    """Encode with `n` threads (at least 1) inside the block (benchmarks; not thread-safe)."""
    global _pool, _pool_pid, _limit
    saved = _pool, _pool_pid, _limit
    _pool, _limit = None, max(1, n)
    try:
        yield
    finally:
        if _pool is not None and _pool_pid == os.getpid():
            _pool.shutdown()
        _pool, _pool_pid, _limit = saved


def _cores() -> int:
    """The cores this process may run on (a SLURM or container CPU set), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _forget_pool() -> None:
    global _pool, _pool_lock
    # A forked child has the parent's pool object but none of its threads, and the lock as it was
    # at the fork (held, if another thread had it then).
    _pool, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _text_chunk(keyword: str, text: str) -> bytes:
    key = keyword.encode("latin-1")
    try:
        return _chunk(b"tEXt", key + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # iTXt: keyword, no compression (flag 0, method 0), empty language and translated keyword.
        return _chunk(b"iTXt", key + b"\0\0\0\0\0" + text.encode("utf-8"))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
