"""The engine: one process-wide object serves requests, from several threads without leaks."""

import threading

import numpy as np
import pytest
from helpers import as_array

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]


def request(model="demo", prompt=PROMPTS[0], seed=1, **flags):
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import GenerateRequest

    return GenerateRequest(
        resolve_defaults({"model": str(model), "width": 64, "height": 64, **flags}), seeds=[seed], prompts=[prompt]
    )


def pixels(results) -> list[np.ndarray]:
    return [as_array(g.image) for g in results]


def test_two_threads_give_the_same_pixels_as_one_after_the_other():
    """Requests that change the transformer's state per run (SLG hooks, DyPE, CFG) do not leak
    into each other when they run at once on one loaded model."""
    from llmdit_cli.engine import Engine

    engine = Engine()
    a = dict(prompt=PROMPTS[0], seed=1, slg=True, slg_scale=3.0, slg_layers=[1, 2])
    b = dict(prompt=PROMPTS[1], seed=2, dype=True, guidance_scale=2.0)
    one_by_one = [pixels(engine.generate(request(**a))), pixels(engine.generate(request(**b)))]

    results: dict = {}
    barrier = threading.Barrier(2)

    def run(name, kwargs):
        barrier.wait()
        results[name] = pixels(engine.generate(request(**kwargs)))

    threads = [threading.Thread(target=run, args=("a", a)), threading.Thread(target=run, args=("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert np.array_equal(results["a"][0], one_by_one[0][0])
    assert np.array_equal(results["b"][0], one_by_one[1][0])
    assert not np.array_equal(one_by_one[0][0], one_by_one[1][0])
    # and a plain request afterwards is untouched by both
    plain = pixels(engine.generate(request(prompt=PROMPTS[0], seed=1)))[0]
    fresh = pixels(Engine().generate(request(prompt=PROMPTS[0], seed=1)))[0]
    assert np.array_equal(plain, fresh)


def test_models_load_once_per_engine():
    from llmdit_cli.engine import Engine

    engine = Engine()
    first, _ = engine.model(request().settings)
    engine.generate(request())
    again, _ = engine.model(request(seed=5).settings)
    assert again is first
    other, _ = engine.model(request(dtype="bfloat16").settings)
    assert other is not first  # placement is part of a model's identity


def test_generate_records_settings_and_returns_latents():
    from llmdit_cli.engine import Engine

    engine = Engine()
    made = engine.generate(request(seed=9, steps=3))
    factor = engine.model(request().settings)[0].limits().vae_scale_factor
    assert len(made) == 1
    g = made[0]
    assert g.seed == 9 and g.prompt == PROMPTS[0]
    assert g.settings["steps"] == 3 and g.settings["width"] == 64 and g.settings["mode"] == "txt2img"
    assert tuple(g.latents.shape) == (1, 16, 64 // factor, 64 // factor)
    assert g.image.size == (64, 64)


def test_library_errors_name_setting_keys_and_the_cli_names_flags():
    from llmdit_cli.cli.errors import message_for
    from llmdit_cli.engine import Engine
    from llmdit_cli.errors import UsageError

    with pytest.raises(UsageError) as info:
        Engine().generate(request(width=30, slg_layers=[99], slg=True))
    assert str(info.value) == "generation.width 30: must be a positive multiple of 16"  # what a server shows
    assert info.value.render(lambda key: f"<{key}>") == "<generation.width> 30: must be a positive multiple of 16"
    assert message_for(info.value) == ("--width 30: must be a positive multiple of 16", 2)
    with pytest.raises(UsageError) as info:
        Engine().generate(request(slg_layers=[99], slg=True))
    assert str(info.value).startswith("slg.layers 99: the transformer has 4 layers")
    assert message_for(info.value)[0].startswith("--slg-layers 99: the transformer has 4 layers")
