"""Sweeps claim cells (issue 26, item 5): any number of `llmdit sweep` processes on one run folder,
however launched, make each cell once; a killed one's cells are taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RECIPE = """
model = "demo"
prompts = ["a red circle on a blue background", "a green square", "a yellow star"]
seeds = [1, 2, 3, 4]
[base]
generation.width = 64
generation.height = 64
[grid]
generation.steps = [3, 4]
"""
CELLS = 24


def start(tmp_path: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "llmdit_cli", "sweep", "claims.toml", "-q", *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def done_records(run: Path) -> list[str]:
    cells = []
    for m in run.glob("manifest*.jsonl"):
        for line in m.read_text().splitlines():
            record = json.loads(line)
            if record["status"] == "done":
                cells.append(record["cell"])
    return cells


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-2000:]


def test_two_processes_on_one_folder_make_each_cell_once(tmp_path):
    (tmp_path / "claims.toml").write_text(RECIPE)
    procs = [start(tmp_path), start(tmp_path)]
    for proc in procs:
        finish(proc)
    done = done_records(tmp_path / "runs" / "claims")
    assert len(done) == CELLS and len(set(done)) == CELLS
    owners = {json.loads(p.read_text())["pid"] for p in (tmp_path / "runs" / "claims" / "claims").iterdir()}
    assert owners <= {p.pid for p in procs}


def test_a_killed_process_leaves_its_cells_to_the_other(tmp_path):
    """A and B start together; A is killed as soon as it holds a claim. B takes over what A
    held (A's pid is gone) and finishes every cell, each recorded done once."""
    (tmp_path / "claims.toml").write_text(RECIPE)
    a, b = start(tmp_path), start(tmp_path)
    claims = tmp_path / "runs" / "claims" / "claims"
    deadline = time.monotonic() + 120
    held = False
    while time.monotonic() < deadline and a.poll() is None and not held:
        held = claims.is_dir() and any(_owner(p) == a.pid for p in claims.iterdir())
        time.sleep(0.01)
    assert held, "process A never claimed a cell"
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    finish(b)
    done = done_records(tmp_path / "runs" / "claims")
    assert sorted(done) == sorted(set(done)) and len(done) == CELLS


def _owner(path: Path):
    try:
        return json.loads(path.read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


def test_a_claim_is_taken_over_only_when_its_owner_is_gone(tmp_path):
    from llmdit_cli.sweep.claims import Claims

    claims = Claims(tmp_path)
    import socket

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)

    for cell, pid in (("dead", dead_pid), ("live", os.getppid())):
        owner = {"host": socket.gethostname(), "pid": pid, "time": time.time()}
        (tmp_path / "claims" / cell).write_text(json.dumps(owner))
    assert claims.take("fresh") == "new"
    assert claims.take("fresh") is None  # held: not taken twice
    assert claims.take("live") is None
    assert claims.take("dead") == "over"
    assert json.loads((tmp_path / "claims" / "dead").read_text())["pid"] == os.getpid()
    other_host = {"host": "elsewhere", "pid": 1, "time": time.time()}
    (tmp_path / "claims" / "remote").write_text(json.dumps(other_host))
    assert claims.take("remote") is None  # fresh on another host: its owner may be running
    old = time.time() - 3600
    os.utime(tmp_path / "claims" / "remote", (old, old))
    assert claims.take("remote") == "over"
    claims.give_back("remote")
    assert not (tmp_path / "claims" / "remote").exists()


def test_srun_tasks_split_the_shard_inside_a_job_step():
    from llmdit_cli.sweep.run import Shard, shard_from_env

    step = {"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}
    assert shard_from_env(step) == (Shard(1, 2), None)
    array = {"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", **step}
    assert shard_from_env(array)[0] == Shard(5, 6)
    batch_shell = {"SLURM_NTASKS": "4", "SLURM_PROCID": "0"}  # no srun: one process does it all
    assert shard_from_env(batch_shell)[0] == Shard()
