"""Write llmdit_cli/cli/setting_facts.py: the settings' defaults and choices that `--help` shows,
taken from config.py (run after changing a setting's default or choices)."""

from pathlib import Path
from pprint import pformat

from llmdit_cli.config import setting_facts

OUT = Path(__file__).resolve().parents[1] / "llmdit_cli" / "cli" / "setting_facts.py"
HEAD = '''"""Generated from config.py by scripts/gen_setting_facts.py; do not edit. Per flag name: the
setting's built-in default and its choices, for `--help` texts (`options.setting_option`)."""

'''


def render() -> str:
    return HEAD + "FACTS = " + pformat(setting_facts(), width=100, sort_dicts=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(OUT)
