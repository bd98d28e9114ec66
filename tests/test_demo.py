"""The demo model: the recipe that trains it runs (shortened here), and the shipped model's
quality is checked with the same evaluator the README's numbers come from."""

from contextlib import contextmanager
from pathlib import Path

from llmdit_cli.train.evaluate import classify, evaluate, score
from llmdit_cli.train.shapes import COLOURS, caption, combos, draw, held_out

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "demo-shapes.toml"


@contextmanager
def no_progress(description, total):
    yield lambda step, loss=None, lr=None: None


def test_shortened_demo_recipe_builds_a_working_model(tmp_path):
    from llmdit_cli.train.loop import Run, train
    from llmdit_cli.train.recipe import load_recipe

    r = load_recipe(
        str(RECIPE),
        {
            "data.path": str(tmp_path / "data"),
            "data.synthetic_per_combo": 1,
            "scratch.vae_steps": 3,
            "scratch.vae_batch_size": 8,
            "train.max_steps": 3,
            "train.batch_size": 8,
            "output.dir": str(tmp_path / "run"),
            "validation.prompts": [],
        },
    )
    result = train(Run(r, tmp_path / "run", lambda m: None, no_progress))
    assert result == tmp_path / "run" / "model"
    assert (tmp_path / "data" / "metadata.jsonl").read_text().count("\n") == len(combos()) - len(held_out())
    s = evaluate(str(result), seeds=[0], steps=2)
    assert s.n == len(held_out())


def test_the_shapes_dataset_is_deterministic_and_holds_combinations_out(tmp_path):
    from llmdit_cli.train.shapes import write_dataset

    a = write_dataset(tmp_path / "a", per_combo=1)
    b = write_dataset(tmp_path / "b", per_combo=1)
    assert (a / "metadata.jsonl").read_text() == (b / "metadata.jsonl").read_text()
    text = (a / "metadata.jsonl").read_text()
    for shape, colour, bg in held_out():
        assert caption(shape, colour, bg) not in text
    assert all(any(f" {c} " in caption(*x) for x in combos() if x not in held_out()) for c in COLOURS)


def test_classifier_reads_drawn_shapes():
    import random

    rng = random.Random(1)
    results = [((s, c, b), classify(draw(s, c, b, 32, rng))) for s, c, b in combos()]
    assert score(results).shape == 1.0 and score(results).colour == 1.0 and score(results).background == 1.0


def test_shipped_demo_quality():
    """A quick check of the shipped model, and that its recorded scores are what it really does."""
    import json

    from llmdit_cli.families.zimage import VARIANTS as FAMILIES
    from llmdit_cli.models import DEMO_PATH

    recorded = json.loads((DEMO_PATH / "llmdit-demo.json").read_text())["held_out_scores"]
    s = evaluate("demo", seeds=[0, 1, 2, 3], steps=FAMILIES["demo"]["steps"])
    assert s.n == recorded["n"]
    for key in ("background", "colour", "shape"):
        assert abs(getattr(s, key) - recorded[key]) <= 0.05, (key, s.line(), recorded)
    # the targets, on combinations it never saw
    assert s.background >= 0.95 and s.colour >= 0.95 and s.shape >= 0.80, s.line()
