"""`finsent alerts receive` listens where `finsent up`'s rules deliver: FINSENT_RECEIVER_PORT unless told."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from finsent.services.process import port_in_use
from tests.ports import free_port
from tests.waiting import wait_for

FINSENT = str(Path(sys.executable).parent / "finsent")


def test_the_receiver_listens_on_the_receiver_port_setting(tmp_path):
    port = free_port()
    env = os.environ | {"FINSENT_RECEIVER_PORT": str(port), "FINSENT_ALERTS_WEBHOOK_SECRET": "s3cret",
                        "FINSENT_STATE_DIR": str(tmp_path)}
    proc = subprocess.Popen([FINSENT, "alerts", "receive"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: port_in_use(port) or proc.poll() is not None, 60, "the receiver's port")
        assert proc.poll() is None
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert f"listening on http://127.0.0.1:{port}" in err
