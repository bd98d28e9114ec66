"""Run the stage-file fuzz test (tests/test_fuzz_readers.py) with many more cases than CI does.

    OMP_NUM_THREADS=1 python benchmarks/fuzz_readers.py [--cases 10000]

Each case is a real embeds or latents file with one corruption (a tensor entry's dtype, shape or
offsets replaced by random JSON or dropped, a renamed key, a header value or the whole metadata
table replaced, truncation, a flipped byte); every one must end in an llmdit error, never in
another exception. Prints the number of cases and the time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10000)
    args = parser.parse_args()
    env = {**os.environ, "READER_FUZZ_CASES": str(args.cases), "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:warnings",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_fuzz_readers.py"),
            "-k",
            "corrupt_stage_files",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    print(r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-2000:])
    print(
        f"{args.cases} fuzzed stage files: {'all ended in llmdit errors or read cleanly' if r.returncode == 0 else 'FAILED'}"
        f" ({seconds:.0f} s)"
    )
    sys.exit(r.returncode)
