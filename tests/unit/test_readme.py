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
