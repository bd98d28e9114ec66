"""schemathesis, property-based and bounded, from the server's own /openapi.json: every operation
with generated bodies, parameters and (stateful) sequences; no answer may be a 5xx."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from helpers import Server


def test_schemathesis_finds_no_server_error(tmp_path):
    # Small limits keep the valid requests it makes fast; a queue long enough that its bursts of
    # jobs are never refused with 503 (a refusal the API documents, but a 5xx all the same).
    s = Server(
        "--model", "demo", "--data-dir", str(tmp_path / "data"), "--max-steps", "3", "--max-pixels", "4096",
        "--max-images", "1", "--max-tokens", "16", "--max-queue", "1000", token="fuzz",
    )  # fmt: skip
    exe = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    try:
        run = subprocess.run(
            [
                exe,
                "run",
                s.url + "/openapi.json",
                "-H",
                "Authorization: Bearer fuzz",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "10",
                "--request-timeout",
                "60",
                "--generation-deterministic",
                "--report-dir",
                str(tmp_path / "report"),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=420,
            cwd=tmp_path,
        )
    finally:
        s.stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested and int(tested.group(1)) == int(selected.group(2)) >= 18, run.stdout[-3000:]
