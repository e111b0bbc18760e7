"""The retrain scheduler's jobs across a restart and a stop, on a real APScheduler with its SQLite store (no job does
I/O: the retrain is a stand-in, the drift check runs on a stand-in context)."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from unittest import mock

from finsent.settings import Settings
from retrain import scheduler as sched
from retrain.conflicts import ResolvedLabel
from retrain.metrics import RetrainMetrics


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


class _SlowScorer:
    """Scores one text a batch, 25 ms each: 400 fresh labels take 10 s, as many labels do on a CPU."""

    def __init__(self) -> None:
        self.scoring = threading.Event()
        self.batches = 0

    def predict_proba(self, texts: list[str], on_batch=None) -> list[list[float]]:
        for _ in texts:
            self.scoring.set()
            time.sleep(0.025)
            self.batches += 1
            if on_batch is not None:
                on_batch()
        return [[0.1, 0.1, 0.8] for _ in texts]


class _Es:
    """No scored document yet (the document monitors wait for data). A check that reaches for anything but ``count``
    is about to record its figures (``helpers.bulk``): that is noted, and fails."""

    def __init__(self) -> None:
        self.reached_for: list[str] = []

    def count(self, **_: object) -> dict:
        return {"count": 0}

    def __getattr__(self, name: str) -> object:
        self.reached_for.append(name)
        raise AttributeError(f"the stand-in Elasticsearch has no {name}: the check went on to record")


class _Registry:
    def champion(self) -> str:
        return "v1"

    def get(self, version: str) -> dict:
        return {"version": version}


class _CheckContext:
    """What ``run_check`` reads: a champion, 400 fresh labels to score with it, and where it records."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.es, self.registry, self.metrics = _Es(), _Registry(), RetrainMetrics()
        self.scorer_of_champion = _SlowScorer()
        self.published: list[object] = []
        self.closed = False
        t0 = datetime(2024, 1, 1, tzinfo=UTC)
        self.labels = [ResolvedLabel(key=f"k{n}", doc_id=f"d{n}", text=f"shares rose {n}", label="positive",
                                     labeled_at=t0 + timedelta(minutes=n), annotators=1, rule="single",
                                     sources=frozenset({"api"})) for n in range(400)]

    def clock(self) -> datetime:
        return datetime.now(UTC)

    def fresh_labels(self, meta: dict) -> tuple[list[ResolvedLabel], list[object]]:
        return self.labels, []

    def scorer(self, version: str) -> _SlowScorer:
        return self.scorer_of_champion

    def publish_control(self, message: object) -> None:
        self.published.append(message)

    def close(self) -> None:
        self.closed = True


def test_a_stop_during_a_drift_check_ends_it_at_the_next_scoring_batch_with_nothing_recorded(tmp_path, caplog) -> None:
    settings = Settings(state_dir=tmp_path, retrain_cron="", docs_retention_days=0, aggregates_retention_days=0,
                        drift_min_labels=30, drift_max_labels=1000)
    contexts: list[_CheckContext] = []
    owner = sched.RetrainScheduler(settings, context_factory=lambda s: contexts.append(_CheckContext(s)) or contexts[0])
    owner.start()
    try:
        owner.scheduler.modify_job(sched.CHECK_JOB, next_run_time=datetime.now(UTC))  # due now, not in 15 minutes
        ctx = contexts[0]
        assert ctx.scorer_of_champion.scoring.wait(timeout=30), "the drift check never began scoring"
    finally:
        with caplog.at_level(logging.INFO):
            started = time.monotonic()
            owner.shutdown()
            took = time.monotonic() - started
    # Before, shutdown waited for all 400 labels (10 s here; minutes with many labels on a CPU).
    assert took < 2, f"shutdown waited {took:.1f} s for the drift check ({ctx.scorer_of_champion.batches} batches)"
    assert ctx.scorer_of_champion.batches < 400 and ctx.closed
    assert ctx.es.reached_for == [] and ctx.published == []  # no drift record, no drift message: no retrain follows
    assert owner.checks == 0
    registry = ctx.metrics.registry
    assert registry.get_sample_value("finsent_drift_checks_total", {"outcome": "stopped"}) == 1
    assert registry.get_sample_value("finsent_drift_checks_total", {"outcome": "stable"}) == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info], \
        [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert any(r.name == "retrain.scheduler" and r.levelno == logging.INFO and "stopped" in r.getMessage()
               for r in caplog.records)
