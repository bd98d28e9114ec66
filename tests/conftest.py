import os

# One thread: two contend on the 2-core CI machine and run many times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("LLMDIT_DEBUG", None)
for _k in [k for k in os.environ if k.startswith("LLMDIT_")]:
    del os.environ[_k]

import pytest  # noqa: E402


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A local Z-Image folder, not the demo: other seed, other layer count."""
    from llmdit_cli.tiny import build_pipeline, save_pipeline

    folder = tmp_path_factory.mktemp("tiny") / "zimage"
    save_pipeline(build_pipeline(seed=123, transformer={"n_layers": 3}), folder)
    return folder


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    """No user config file leaks into tests; each test runs in its own folder."""
    monkeypatch.setenv("LLMDIT_CONFIG", "")
    monkeypatch.delenv("LLMDIT_CONFIG")
    monkeypatch.setattr("llmdit_cli.config.default_config_path", lambda: tmp_path / "no-config.toml")
    # The embedding cache, per test and outside its folder (tests check that folder for leftovers).
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path.parent / f"{tmp_path.name}-xdg-cache"))
    # The studio's history likewise (`llmdit serve`, `llmdit history`): never the user's own.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path.parent / f"{tmp_path.name}-xdg-data"))
    monkeypatch.chdir(tmp_path)


class Run:
    def __init__(self, result):
        self.code = result.exit_code
        self.stdout_bytes = result.stdout_bytes
        self.stdout = result.stdout_bytes.decode("utf-8", "replace")
        self.stderr = result.stderr_bytes.decode("utf-8", "replace") if result.stderr_bytes else ""
        self.exception = result.exception


@pytest.fixture
def cli():
    """Run `llmdit ARGS` in-process with real stdin bytes; returns code, stdout, stderr."""
    from typer.testing import CliRunner

    from llmdit_cli.cli.app import app

    def run(*args, input=None):
        result = CliRunner().invoke(app, [str(a) for a in args], input=input)
        return Run(result)

    return run
