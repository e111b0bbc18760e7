"""The README stays true: its commands exist and its configuration table is the real one."""

from __future__ import annotations

from finsent import config_table
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def test_the_two_commands_are_at_the_top():
    top = README.split("\n## ", 1)[0]
    assert "make up" in top and "make test" in top


def test_makefile_and_ci_run_what_the_readme_says():
    makefile = (ROOT / "Makefile").read_text()
    assert "\nup:" in makefile and "\ntest:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_configuration_table_is_generated_from_the_settings():
    assert config_table.markdown() in README, "run: python -m finsent.readme_sync (README table is stale)"


def test_every_command_the_documents_name_exists():
    import re

    import typer

    from finsent.cli import app

    root = typer.main.get_command(app)
    named = set()
    for doc in ("README.md", "MODEL.md", "RELIABILITY.md", "BENCHMARKS.md"):
        text = (ROOT / doc).read_text()
        named |= {(m[0], m[1]) for m in re.findall(r"`finsent ([a-z][a-z-]*)(?: ([a-z][a-z|-]*))?", text)}
    missing = []
    for group, commands in sorted(named):
        if group not in root.commands:
            missing.append(group)
        elif commands and isinstance(root.commands[group], typer.core.TyperGroup):
            missing += [f"{group} {c}" for c in commands.split("|") if c not in root.commands[group].commands]
    assert len(named) > 30
    assert missing == []
