"""The retrain scheduler's jobs across a restart, on a real APScheduler with its SQLite store (no job does I/O:
the retrain is a stand-in)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from unittest import mock

from finsent.settings import Settings
from retrain import scheduler as sched


class _Context:
    def close(self) -> None:
        pass


def test_a_fallback_retrain_missed_while_the_scheduler_was_down_runs_when_it_is_back(tmp_path) -> None:
    ran = threading.Event()
    settings = Settings(state_dir=tmp_path, retrain_cron="0 3 * * 0", docs_retention_days=0,
                        aggregates_retention_days=0)
    with mock.patch("retrain.retraining.run_retrain", lambda ctx, **kw: ran.set()):
        first = sched.RetrainScheduler(settings, context_factory=lambda s: _Context()).start()
        first.scheduler.pause()
        # As an older version stored it (the setting's grace, 300 s), and due an hour ago: the machine slept.
        first.scheduler.modify_job(sched.CRON_JOB, misfire_grace_time=300,
                                   next_run_time=datetime.now(UTC) - timedelta(hours=1))
        first.shutdown()
        second = sched.RetrainScheduler(settings.model_copy(update={"retrain_misfire_grace_s": 600}),
                                        context_factory=lambda s: _Context()).start()
        try:
            assert ran.wait(timeout=30), "the missed weekly retrain was skipped until next week"
            assert second.scheduler.get_job(sched.CRON_JOB).misfire_grace_time is None
            assert second.scheduler.get_job(sched.CHECK_JOB).misfire_grace_time == 600  # the setting as it is now
        finally:
            second.shutdown()
