"""The parallel PNG encoder (llmdit_cli/pngwrite.py) and the pixel conversion after the VAE
(llmdit_cli/stages/pixels.py): both must give what PIL and diffusers give, byte for byte where it
is the pixels."""

from __future__ import annotations

import io
import multiprocessing
import os
import select
import zlib

import numpy as np
import pytest
from PIL import Image

from llmdit_cli import pngmeta, pngwrite


def photo_like(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients with noise: compressible, and every Paeth branch gets taken."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([(x * 3 + y) % 256, (y * 2) % 256, (x + y * 5) % 256, (x * y) % 256], -1)[..., :channels]
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def decoded(data: bytes) -> Image.Image:
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("RGBA", 4), ("L", 1)])
@pytest.mark.parametrize("size", [(1, 1), (7, 5), (64, 1), (1, 300), (300, 700), (1024, 1024)])
def test_pixels_come_back_exactly(mode, channels, size):
    h, w = size
    array = photo_like(h, w, channels)
    image = Image.fromarray(array[..., 0] if channels == 1 else array, mode)
    back = decoded(pngwrite.encode_png(image))
    assert back.mode == mode and back.size == image.size
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_many_bands_join_into_one_zlib_stream(monkeypatch):
    """Small bands force dozens of primed pieces; the IDAT must still be a single valid stream."""
    monkeypatch.setattr(pngwrite, "BAND_BYTES", 3000)
    image = Image.fromarray(photo_like(200, 333, 3))
    data = pngwrite.encode_png(image)
    assert np.array_equal(np.asarray(decoded(data)), np.asarray(image))
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = zlib.decompress(idat)  # checks the Adler-32 trailer too
    assert len(raw) == 200 * (333 * 3 + 1)
    assert set(raw[:: 333 * 3 + 1]) == {4}  # every scanline says Paeth


def test_size_close_to_pils():
    image = Image.fromarray(photo_like(512, 512, 3))
    ours = len(pngwrite.encode_png(image))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    assert ours < 1.15 * len(buf.getvalue())


def test_text_chunks_latin1_and_utf8():
    image = Image.fromarray(photo_like(16, 16, 3))
    texts = [("llmdit", '{"prompt": "caf\\u00e9"}'), ("parameters", "a cat, café"), ("note", "猫 on a mat")]
    data = pngwrite.encode_png(image, texts)
    assert decoded(data).text == dict(texts)
    assert data.count(b"tEXt") == 2 and data.count(b"iTXt") == 1


def test_png_bytes_keeps_settings_and_falls_back_to_pil():
    settings = {"prompt": "a red circle 赤い丸", "seed": 3, "steps": 8, "width": 16, "height": 16}
    for image in (
        Image.fromarray(photo_like(16, 16, 3)),
        Image.fromarray(photo_like(16, 16, 3)).convert("P"),  # palette: PIL's encoder
        Image.fromarray(photo_like(16, 16, 2)[..., :2], "LA"),
    ):
        data = pngmeta.png_bytes(image, settings)
        assert pngmeta.settings_of(data, "x.png") == settings
        assert "赤い丸" in decoded(data).text["parameters"]
        assert np.array_equal(np.asarray(decoded(data)), np.asarray(image))


def test_images_with_profiles_are_left_to_pil():
    image = Image.fromarray(photo_like(8, 8, 3))
    assert pngwrite.encodable(image)
    image.info["icc_profile"] = b"not really a profile"
    assert not pngwrite.encodable(image)
    assert not pngwrite.encodable(Image.new("I;16", (4, 4)))


def _encode_in_child(queue) -> None:
    image = Image.fromarray(photo_like(300, 400, 3))
    data = pngwrite.encode_png(image)
    queue.put(np.array_equal(np.asarray(decoded(data)), np.asarray(image)))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_gets_its_own_threads():
    """The parent's pool has threads; a forked child must not wait on threads it does not have."""
    pngwrite.encode_png(Image.fromarray(photo_like(300, 400, 3)))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_encode_in_child, args=(queue,))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive and queue.get(timeout=5) is True


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_decoded_pixels_match_diffusers_postprocess(dtype):
    import torch
    from diffusers.image_processor import VaeImageProcessor

    from llmdit_cli.stages.pixels import decoded_to_pil

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(2, 3, 24, 40, generator=g) * 2.4 - 1.2  # some outside [-1, 1]
    halves = (torch.arange(256, dtype=torch.float32) + 0.5) / 255 * 2 - 1  # x*255 lands on n + 0.5
    pixels[0, 0, 0, : min(40, 256)] = halves[:40]
    pixels = pixels.to(getattr(torch, dtype))
    ours = decoded_to_pil(pixels)
    theirs = VaeImageProcessor(vae_scale_factor=16).postprocess(pixels, output_type="pil")
    assert [im.mode for im in ours] == ["RGB", "RGB"]
    for a, b in zip(ours, theirs):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_same_bytes_whatever_the_thread_count():
    """Bands are cut by size, not by thread count: one thread or many write the same file."""
    image = Image.fromarray(photo_like(400, 500, 3))
    many = pngwrite.encode_png(image, [("k", "v")])
    with pngwrite.threads_limited(1):
        assert pngwrite.workers() == 1
        one = pngwrite.encode_png(image, [("k", "v")])
    assert one == many
    assert pngwrite.workers() >= 1


def test_empty_images_are_left_to_pil():
    for size in ((5, 0), (0, 5), (0, 0)):
        assert not pngwrite.encodable(Image.new("RGB", size))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_child_forked_inside_a_thread_limit_encodes_after_it():
    """Leaving `threads_limited` in a forked child must not hand it back the parent's pool."""
    image = Image.fromarray(photo_like(600, 500, 3))
    pngwrite.encode_png(image)
    read, write = os.pipe()
    with pngwrite.threads_limited(2):
        pid = os.fork()
    if pid == 0:  # the child: encode after the block, report, and leave without pytest's cleanup
        try:
            ok = np.array_equal(np.asarray(decoded(pngwrite.encode_png(image))), np.asarray(image))
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 60)
    answer = os.read(read, 1) if ready else b""
    if not ready:
        os.kill(pid, 9)
    os.waitpid(pid, 0)
    assert answer == b"1"


def test_decoded_pixels_nan_grey_and_rgba_as_diffusers():
    import torch
    from diffusers.image_processor import VaeImageProcessor

    from llmdit_cli.stages.pixels import decoded_to_pil

    processor = VaeImageProcessor(vae_scale_factor=16)
    for channels in (1, 4):
        pixels = torch.rand(2, channels, 6, 9, generator=torch.Generator().manual_seed(channels)) * 2 - 1
        ours, theirs = decoded_to_pil(pixels), processor.postprocess(pixels, output_type="pil")
        assert [im.mode for im in ours] == [im.mode for im in theirs]
        assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs))
    nan = torch.full((1, 3, 4, 4), float("nan"))
    assert np.asarray(decoded_to_pil(nan)[0]).max() == 0
