"""Write the static shell completion scripts in completions/ (run after changing any flag)."""

from pathlib import Path

from llmdit_cli.cli.completions import FILES, render

OUT = Path(__file__).resolve().parents[1] / "completions"

if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    for shell, name in FILES.items():
        (OUT / name).write_text(render(shell))
        print(OUT / name)
