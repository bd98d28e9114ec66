"""Build the shipped tiny Qwen3-VL (`--vl-model demo`): random weights from a fixed seed, the
demo text encoder's hidden size (64), a byte tokenizer with the vision tokens, a PIL image
processor. It makes vision conditioning run offline in seconds; its images mean nothing.

    python scripts/build_demo_vl.py
"""

import shutil

from llmdit_cli.artifacts import give_usual_modes
from llmdit_cli.tiny import save_qwen3_vl
from llmdit_cli.vision import VL_DEMO_PATH

if __name__ == "__main__":
    shutil.rmtree(VL_DEMO_PATH, ignore_errors=True)
    save_qwen3_vl(VL_DEMO_PATH, seed=0, hidden_size=64)
    give_usual_modes(VL_DEMO_PATH)
    print(VL_DEMO_PATH)
