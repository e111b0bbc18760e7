"""Rewrite the README's configuration table from the settings class: ``python -m finsent.readme_sync``."""

from __future__ import annotations

import re

from finsent import config_table
from finsent.training_data import PROJECT_ROOT

START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def main() -> None:
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    block = f"{START}\n{config_table.markdown()}\n{END}"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
