"""Which folder keeps Elasticsearch's unprivileged user out."""

import shutil
import tempfile
from pathlib import Path

import pytest

from finsent.services.elasticsearch_server import _first_closed_parent


@pytest.fixture
def open_root():
    # Not tmp_path: pytest's own base folder is mode 700 and would be the answer every time.
    root = Path(tempfile.mkdtemp(prefix="finsent-es-paths-"))
    root.chmod(0o755)
    yield root
    for folder in [root, *root.rglob("*")]:
        folder.chmod(0o755)
    shutil.rmtree(root)


def test_the_outermost_closed_parent_is_named(open_root):
    outer = open_root / "outer"
    inner = outer / "inner"
    target = inner / "es" / "data"
    target.mkdir(parents=True)
    outer.chmod(0o700)
    inner.chmod(0o700)
    assert _first_closed_parent(target) == outer
    outer.chmod(0o711)
    assert _first_closed_parent(target) == inner
    inner.chmod(0o755)
    assert _first_closed_parent(target) is None


def test_folders_not_created_yet_do_not_count(open_root):
    assert _first_closed_parent(open_root / "later" / "es" / "data") is None
    (open_root / "closed").mkdir(mode=0o700)
    assert _first_closed_parent(open_root / "closed" / "later" / "es") == open_root / "closed"
