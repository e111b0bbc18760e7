"""Shared fixtures. Integration tests get the real Kafka and Elasticsearch that
`finsent services up` starts; the session starts them when needed and stops only what it
started (`make test` starts them itself, before its pytest-xdist processes). Each test gets
its own topic and index prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import settings as hypothesis_settings

from finsent.settings import Settings, load_settings

# Tests never reach a model hub, and tokenizer threads must not fight the scorer's.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Property-based tests explore the same cases on every run (CI must not be a lottery) and are
# judged on what they find, not on how fast a loaded machine runs them.
hypothesis_settings.register_profile("finsent", derandomize=True, deadline=None)
hypothesis_settings.load_profile("finsent")

# Fixtures that give tests a real (tiny) trained model live with the model's tests.
pytest_plugins = ["tests.model_fixtures"]

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def services(base_settings: Settings):
    """The real local Kafka and Elasticsearch, up and healthy, with the default topology."""
    from tests import local_servers

    # Under pytest-xdist every process runs this; the lock lets one start the servers. The others may still use
    # them when this one ends, so only a run in one process stops them (`make test` starts them before it forks).
    base_settings.services_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(base_settings.services_path.parent / "services.lock"):
        started = local_servers.start(base_settings)
    yield base_settings
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        local_servers.stop(started)


@pytest.fixture
def settings(services: Settings, tmp_path: Path) -> Settings:
    """Settings isolated for one test: its own topic/index prefix and model/state folders; its
    topics and indices are deleted afterwards."""
    from finsent.services import manager

    tag = "t" + uuid.uuid4().hex[:10]
    isolated = services.model_copy(
        update={
            "topic_prefix": tag,
            "index_prefix": tag,
            "model_dir": tmp_path / "models",
        }
    )
    yield isolated
    manager.remove_prefixed(isolated)


@pytest.fixture
def bootstrapped(settings: Settings) -> Settings:
    """Isolated settings whose topics and indices already exist."""
    from finsent.services import manager

    manager.init(settings, echo=lambda m: None)
    return settings
