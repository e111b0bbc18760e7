"""`finsent bench …` as a subprocess against the test session's Kafka and Elasticsearch."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_bench(services, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """One thread, CPU, no registry of its own (the tests pass ``--model FOLDER``)."""
    env = os.environ | {"FINSENT_KAFKA_BOOTSTRAP": services.kafka_bootstrap,
                        "FINSENT_ELASTICSEARCH_URL": services.elasticsearch_url,
                        "FINSENT_MODEL_DIR": str(tmp_path / "no-registry"), "FINSENT_DEVICE": "cpu",
                        "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([str(ROOT / ".venv" / "bin" / "finsent"), "bench", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=540)
