"""APScheduler 3 jobs for drift checks and retrains, persisted in SQLite so schedules survive restarts.

Jobs (in ``<state_dir>/retrain/scheduler.sqlite``):

- ``drift-check`` — every ``FINSENT_DRIFT_CHECK_MINUTES``; when it finds drift it adds the
  one-shot ``retrain-on-drift`` job (persisted too: a crash between the two loses nothing).
- ``retrain-cron`` — the fallback retrain on ``FINSENT_RETRAIN_CRON`` (UTC), gated on fresh labels.
  A standard crontab: day of week 0 or 7 is Sunday (:func:`cron_trigger`; APScheduler's own
  ``from_crontab`` counts from Monday).
- ``index-retention`` — hourly, while a retention setting is on: old scored documents and window
  aggregates leave Elasticsearch (:mod:`finsent.index_retention`).

All jobs: ``max_instances=1``, ``coalesce=True`` (missed runs collapse into one). A drift check or
a retention run missed by more than ``FINSENT_RETRAIN_MISFIRE_GRACE_S`` is skipped (the next one is
near); a retrain runs however late (:data:`RUN_HOWEVER_LATE`): the weekly fallback missed while
the scheduler was down or the machine slept would otherwise wait a week. On start, a stored job
whose trigger is unchanged is kept as stored (its next run time included, its grace brought up to
date); a changed one is replaced.
Jobs are stored by reference with one string argument (the topic prefix), never with
settings or secrets; the running process maps that key to its live context.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

from finsent import index_retention
from finsent.settings import Settings
from retrain.context import Context

log = logging.getLogger(__name__)

CHECK_JOB, CRON_JOB, DRIFT_RETRAIN_JOB = "drift-check", "retrain-cron", "retrain-on-drift"
RETENTION_JOB = "index-retention"
OPTIONAL_JOBS = (CRON_JOB, RETENTION_JOB)  # removed from the store when their setting turns them off
RUN_HOWEVER_LATE = (CRON_JOB, DRIFT_RETRAIN_JOB)  # misfire_grace_time None: late, coalesced into one run
_RUNNING: dict[str, RetrainScheduler] = {}
_RUNNING_LOCK = threading.Lock()


def check_job(key: str) -> None:
    owner = _owner(key)
    from retrain.drift_check import CheckStopped, run_check

    with owner.running():
        try:
            report = run_check(owner.ctx, should_stop=lambda: owner.stopping)
        except CheckStopped as exc:  # a stop, not a failure: nothing recorded; the next start checks again
            log.info("%s: nothing recorded; the scheduler checks again when it next runs", exc)
            return
        owner.checks += 1
        if report.drift_detected and not owner.stopping:
            owner.scheduler.add_job(f"{__name__}:retrain_job", trigger="date", id=DRIFT_RETRAIN_JOB,
                                    args=[key, "drift"], replace_existing=True, name="retrain after drift",
                                    misfire_grace_time=None)


def retrain_job(key: str, trigger: str) -> None:
    owner = _owner(key)
    from retrain.retraining import run_retrain

    with owner.running():
        outcome = run_retrain(owner.ctx, trigger=trigger, drift_detected=trigger == "drift",
                              should_stop=lambda: owner.stopping)
        owner.outcomes.append(outcome)


def retention_job(key: str) -> None:
    owner = _owner(key)
    with owner.running():
        metrics = owner.ctx.metrics
        try:
            outcomes = index_retention.run(owner.ctx.es, owner.settings, owner.ctx.clock(),
                                           should_stop=lambda: owner.stopping)
        except Exception as exc:  # noqa: BLE001 - the window sizes unread (Elasticsearch away): the next hour tries
            log.warning("index retention failed (%s: %s); the next run tries again", type(exc).__name__, exc)
            metrics.retention_runs.labels(outcome="failed").inc()
            return
        for outcome in outcomes:
            metrics.retention_deleted.labels(index=outcome.deletion.index).inc(outcome.deleted)
        metrics.retention_runs.labels(outcome="ok" if all(o.ok for o in outcomes) else "failed").inc()


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab's numbering: 0 (and 7) is Sunday


def _crontab_day(text: str) -> int:
    """0-7 (7 is Sunday again) or a three-letter name."""
    if text.lower() in _DAY_NAMES:
        return _DAY_NAMES.index(text.lower())
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"day of week {text!r} is neither 0-7 (0 and 7 = Sunday) nor sun-sat")


def crontab_days_of_week(field: str) -> str:
    """A standard crontab day-of-week field as APScheduler 3 reads it: day names, since its numbers
    count from Monday = 0 (its ``from_crontab`` ran "0" — Sunday to cron — on Mondays, and refused "7").

    Takes numbers and names, ``a-b`` ranges, lists, and ``/n`` steps after ``*`` or a range. Not croniter's
    expansion (installed with Faust): it reads ``2-2`` as every day, a documented deviation from crontab."""
    days: set[int] = set()
    for part in field.split(","):
        span, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) > 0):
            raise ValueError(f"day of week {part!r}: the step after / must be a whole number above 0")
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first, last = (_crontab_day(end) for end in span.split("-", 1))
            last = 7 if last == 0 < first else last  # "sat-sun": up to Sunday
            if last < first:
                raise ValueError(f"day of week {part!r}: the range runs backwards")
        elif slash:
            raise ValueError(f"day of week {part!r}: a step needs * or a range before it (e.g. 1-5/2)")
        else:
            first = last = _crontab_day(span)
        days.update(day % 7 for day in range(first, last + 1, int(step_text or 1)))
    return "*" if len(days) == 7 else ",".join(_DAY_NAMES[day] for day in sorted(days))


def cron_trigger(expression: str) -> Any:
    """APScheduler's ``CronTrigger`` (UTC) for a standard five-field crontab line."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"{expression!r} has {len(fields)} fields, not 5 (minute hour day month day-of-week)")
    minute, hour, day, month, day_of_week = fields
    if day != "*" and day_of_week != "*":
        # cron runs when either matches, APScheduler only when both do: ask for one of them.
        raise ValueError(f"{expression!r} restricts both the day of the month and the day of the week; "
                         "cron runs on either, APScheduler would need both: keep one and put * in the other")
    return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                       day_of_week=crontab_days_of_week(day_of_week), timezone=UTC)


def _background_scheduler(**options: Any) -> Any:
    """APScheduler's ``BackgroundScheduler``, less the pass over due jobs its thread makes once shut down: with the
    executors gone, each due run fails to start ("cannot schedule new futures after shutdown") and is moved to its
    next time, so a weekly retrain missed while the machine slept, or stored while ``start`` failed, was lost."""
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.base import STATE_STOPPED

    class Scheduler(BackgroundScheduler):
        def _process_jobs(self) -> float | None:
            return None if self.state == STATE_STOPPED else super()._process_jobs()

    return Scheduler(**options)


def _owner(key: str) -> RetrainScheduler:
    with _RUNNING_LOCK:
        owner = _RUNNING.get(key)
    if owner is None:
        raise RuntimeError(f"no running retrain scheduler for {key!r} in this process")
    return owner


class RetrainScheduler:
    def __init__(self, settings: Settings, *, context_factory: Callable[[Settings], Context] = Context.open) -> None:
        self.settings = settings
        self.key = settings.topic_prefix
        self.context_factory = context_factory
        self.store_path = settings.state_dir.resolve() / "retrain" / "scheduler.sqlite"
        self.ctx: Context | None = None
        self.scheduler: Any = None
        self.checks = 0
        self.outcomes: list[Any] = []
        self.stopping = False
        self._active = 0
        self._idle = threading.Condition()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Counts a job in flight, so that shutdown can wait for it (see :meth:`shutdown`)."""
        with self._idle:
            self._active += 1
        try:
            yield
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def start(self) -> RetrainScheduler:
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        with _RUNNING_LOCK:
            if self.key in _RUNNING:
                raise RuntimeError(f"a retrain scheduler for {self.key!r} already runs in this process")
            _RUNNING[self.key] = self
        try:
            self.ctx = self.context_factory(self.settings)
            self.store_path.parent.mkdir(parents=True, exist_ok=True)
            self.scheduler = _background_scheduler(
                jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{self.store_path}")},
                job_defaults={"coalesce": True, "max_instances": 1,
                              "misfire_grace_time": self.settings.retrain_misfire_grace_s},
                timezone=UTC,
            )
            self.scheduler.start(paused=True)  # load stored jobs before deciding what to change
            self.sync_jobs()
            self.scheduler.resume()
        except BaseException:
            self.shutdown(wait=False)
            raise
        return self

    def _desired(self) -> dict[str, tuple[str, Any, list[Any], str]]:
        from apscheduler.triggers.interval import IntervalTrigger

        jobs = {CHECK_JOB: (f"{__name__}:check_job", IntervalTrigger(minutes=self.settings.drift_check_minutes,
                                                                     timezone=UTC), [self.key], "drift check")}
        if self.settings.retrain_cron.strip():
            try:
                cron = cron_trigger(self.settings.retrain_cron)
            except ValueError as exc:
                raise ValueError(f"FINSENT_RETRAIN_CRON: {exc}") from None
            jobs[CRON_JOB] = (f"{__name__}:retrain_job", cron, [self.key, "cron"], "fallback retrain")
        if index_retention.is_on(self.settings):
            jobs[RETENTION_JOB] = (f"{__name__}:retention_job", IntervalTrigger(hours=1, timezone=UTC), [self.key],
                                   "index retention")
        return jobs

    def sync_jobs(self) -> list[str]:
        """Add or replace jobs whose definition changed; returns the ids (re)written."""
        desired = self._desired()
        written = []
        for job_id, (func, trigger, args, name) in desired.items():
            stored = self.scheduler.get_job(job_id)
            grace = None if job_id in RUN_HOWEVER_LATE else self.settings.retrain_misfire_grace_s
            if stored is not None and str(stored.trigger) == str(trigger) and list(stored.args) == args:
                if stored.misfire_grace_time != grace:  # modified, not replaced: a run missed meanwhile still runs
                    self.scheduler.modify_job(job_id, misfire_grace_time=grace)
                    written.append(job_id)
                continue
            self.scheduler.add_job(func, trigger=trigger, id=job_id, args=args, name=name, replace_existing=True,
                                   misfire_grace_time=grace)
            written.append(job_id)
        for job_id in OPTIONAL_JOBS:
            if job_id not in desired and self.scheduler.get_job(job_id) is not None:
                self.scheduler.remove_job(job_id)
        return written

    def jobs(self) -> dict[str, dict[str, Any]]:
        return {job.id: {"name": job.name, "trigger": str(job.trigger), "next_run_time": job.next_run_time}
                for job in self.scheduler.get_jobs()}

    def shutdown(self, wait: bool = True) -> None:
        self.stopping = True
        if self.scheduler is not None and self.scheduler.running:
            # Never APScheduler's shutdown(wait=True): it holds the job-store lock while it waits
            # for running jobs, and a drift check that found drift needs that lock for add_job, so
            # a SIGTERM during such a check hung the process. Stop first, then wait for the jobs.
            self.scheduler.shutdown(wait=False)
        if wait:
            with self._idle:
                self._idle.wait_for(lambda: self._active == 0)
        if self.ctx is not None:
            self.ctx.close()
            self.ctx = None
        with _RUNNING_LOCK:
            if _RUNNING.get(self.key) is self:
                del _RUNNING[self.key]

    def __enter__(self) -> RetrainScheduler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
