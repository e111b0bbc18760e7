"""A retrain: gate → fine-tune from the champion (replay + fresh labels) → evaluate → decide.

Every outcome — promoted, rejected, superseded (better, but the champion changed while it
trained), skipped (when a retrain was wanted but gated), stopped (the scheduler stopped while it
trained or judged; it counts as no attempt, and a challenger it was judging is deleted) or
failed — is an audit record in ``<prefix>-retrain`` with its figures, and a line in
``<state_dir>/retrain/audit.jsonl`` (kept even when Elasticsearch is down). Only one retrain
runs at a time on a machine: a lock file under ``state_dir`` guards it across processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from finsent.schemas import ControlMessage
from model.onnx_runtime import export_missing, onnx_file
from retrain import golden as goldenmod
from retrain.conflicts import ResolvedLabel, split_holdout
from retrain.context import Context, flat_details, label_cutoff, meta_time
from retrain.decision import (LastAttempt, PromotionPolicy, Scores, decide_promotion, should_retrain,
                              skip_before_labels)
from retrain.label_store import SEARCHABLE_WITHIN, StoredLabel

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    decision: str  # promoted | rejected | superseded | skipped | stopped | failed | busy
    reasons: list[str]
    champion_version: str | None = None
    challenger_version: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)  # versions deleted from the registry afterwards
    workers_notified: bool | None = None  # after a promotion: whether the control message went out
    warnings: list[str] = field(default_factory=list)


class RetrainBusy(RuntimeError):
    pass


class JudgingStopped(Exception):
    """``should_stop`` said so between two scoring batches of the judging, or around the ONNX export: the challenger
    is deleted (:func:`discard_unjudged`)."""


@contextlib.contextmanager
def exclusive(state_dir: Path) -> Iterator[None]:
    """At most one retrain per state folder, across threads and processes."""
    path = state_dir / "retrain" / "retrain.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RetrainBusy("another retrain is running") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def last_attempt(ctx: Context) -> LastAttempt | None:
    # Not "superseded": that challenger was never compared with the champion a next retrain starts from.
    resp = ctx.es.options(ignore_status=404).search(
        index=ctx.settings.index("retrain"), size=1, sort=[{"decided_at": "desc"}],
        query={"terms": {"decision": ["promoted", "rejected", "failed"]}},
        source=["decided_at", "labels_until", "labels_read_at", "decision"])
    hits = resp.get("hits", {}).get("hits", []) if resp else []
    if not hits:
        return None
    src = hits[0]["_source"]
    return LastAttempt(at=datetime.fromisoformat(src["decided_at"]), labels_until=meta_time(src, "labels_until"),
                       failed=src.get("decision") == "failed", labels_read_at=meta_time(src, "labels_read_at"))


def _evaluate(ctx: Context, version: str, rows: list[tuple[str, str]],
              should_stop: Callable[[], bool] | None = None) -> Scores:
    """``version``'s figures on ``rows``; :class:`JudgingStopped` before the model loads, or after a scoring batch,
    once ``should_stop()`` says so: judging scores the golden set (600 rows by default) and the held-back labels with
    both models, which a shared CPU takes a while over."""
    from model.evaluation import predicted_labels, scored_metrics

    if not rows:
        return Scores(0.0, 0.0, 0)
    scored = [0]  # batches

    def stop_if_asked() -> None:
        if should_stop is not None and should_stop():
            raise JudgingStopped(f"judging stopped while scoring {version} on {len(rows)} rows, after {scored[0]} "
                                 "batch(es)")

    def after_batch() -> None:
        scored[0] += 1
        stop_if_asked()

    stop_if_asked()
    probs = ctx.scorer(version).predict_proba([t for t, _ in rows], on_batch=after_batch)
    labels = [label for _, label in rows]
    result = scored_metrics(probs, labels)
    return Scores(accuracy=float(result.get("accuracy", 0.0)), macro_f1=float(result.get("macro_f1", 0.0)),
                  n=len(rows), correct=tuple(p == t for p, t in zip(predicted_labels(probs), labels, strict=True)))


@dataclass(frozen=True)
class LabelsSeen:
    """What a retrain saw of the labels: the newest ``labeled_at`` (never earlier than the champion's
    own ``labels_until``) and when it read them. The model it trains records both: labels dated
    after the first, or stored after the second, are fresh to it (:meth:`Context.fresh_labels`)."""

    until: datetime | None
    read_at: datetime

    @classmethod
    def of(cls, fresh: list[ResolvedLabel], cutoff: datetime | None, read_at: datetime) -> LabelsSeen:
        newest = fresh[-1].labeled_at if fresh else None  # fresh is ordered by labeled_at
        # A retrain on labels dated back only must not move the watermark back: older labels would be fresh again.
        return cls(max((t for t in (newest, cutoff) if t is not None), default=None), read_at)


def audit(ctx: Context, outcome: Outcome, *, trigger: str, started: float, fresh: list[ResolvedLabel] | None,
          seen: LabelsSeen | None = None, extra: dict[str, Any] | None = None) -> None:
    """``fresh`` None: no label was read (a skip before the labels, :func:`retrain.decision.skip_before_labels`)."""
    f = outcome.figures
    doc = {
        "decided_at": ctx.clock().isoformat(), "trigger": trigger, "decision": outcome.decision,
        "reasons": "; ".join(outcome.reasons + outcome.warnings), "champion_version": outcome.champion_version,
        "challenger_version": outcome.challenger_version, "fresh_labels": None if fresh is None else len(fresh),
        "labels_until": seen.until.isoformat() if seen and seen.until else None,
        "labels_read_at": seen.read_at.isoformat() if seen else None,
        "champion_golden_f1": f.get("champion_golden_macro_f1"), "challenger_golden_f1": f.get("challenger_golden_macro_f1"),
        "champion_fresh_f1": f.get("champion_fresh_macro_f1"), "challenger_fresh_f1": f.get("challenger_fresh_macro_f1"),
        "duration_s": round(time.monotonic() - started, 3), "figures": f,
    } | (extra or {})
    path = ctx.settings.state_dir / "retrain" / "audit.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(orjson.dumps(doc) + b"\n")
    try:
        ctx.es.index(index=ctx.settings.index("retrain"), document=doc, refresh="wait_for")
    except Exception as exc:  # the JSONL line above keeps the record
        log.error("could not index the retrain audit record: %s", exc)
    ctx.metrics.retrain_decisions.labels(decision=outcome.decision).inc()
    log.info("retrain %s (%s): %s", outcome.decision, trigger, "; ".join(outcome.reasons))
    for warning in outcome.warnings:
        log.warning("retrain %s: %s", outcome.decision, warning)


def run_retrain(ctx: Context, *, trigger: str, drift_detected: bool = False,
                should_stop: Callable[[], bool] | None = None) -> Outcome:
    """``trigger``: "drift" (after a check found drift), "cron" (fallback) or "manual". Training, or the
    judging of its challenger, ends early, as "stopped", once ``should_stop()`` says so."""
    started = time.monotonic()
    try:
        with exclusive(ctx.settings.state_dir):
            return _run(ctx, trigger=trigger, drift_detected=drift_detected, started=started, should_stop=should_stop)
    except RetrainBusy as exc:
        return Outcome("busy", [str(exc)])


def _run(ctx: Context, *, trigger: str, drift_detected: bool, started: float,
         should_stop: Callable[[], bool] | None) -> Outcome:
    from model.training import TrainingStopped

    s = ctx.settings
    champion = ctx.registry.champion()
    if champion is None:
        outcome = Outcome("skipped", ["no champion model: train one with `finsent model train` and promote it"])
        audit(ctx, outcome, trigger=trigger, started=started, fresh=None)
        return outcome

    def skipped(why: str, fresh: list[ResolvedLabel] | None = None, seen: LabelsSeen | None = None) -> Outcome:
        # A drift check that found no drift is no retrain decision: not audited.
        outcome = Outcome("skipped", [why], champion_version=champion)
        if trigger != "drift" or drift_detected:
            audit(ctx, outcome, trigger=trigger, started=started, fresh=fresh, seen=seen)
        return outcome

    attempt = last_attempt(ctx)
    cooldown = timedelta(minutes=s.retrain_cooldown_minutes)
    # No drift, or within the cooldown: skipped whatever the labels, so none is read (fresh_labels null in the audit).
    early = skip_before_labels(trigger=trigger, drift_detected=drift_detected, last_attempt=attempt, now=ctx.clock(),
                               cooldown=cooldown)
    if early is not None:
        return skipped(early)
    meta = ctx.registry.get(champion)
    # Before the reads, by as long as a stored label may take to be searchable: a label stored about
    # then counts as fresh once more next time, never as seen.
    read_at = ctx.clock() - SEARCHABLE_WITHIN

    def gate(fresh: list[ResolvedLabel]) -> tuple[bool, str]:
        return should_retrain(trigger=trigger, drift_detected=drift_detected, fresh_labels=len(fresh),
                              newest_label=fresh[-1].labeled_at if fresh else None, min_labels=s.retrain_min_labels,
                              last_attempt=attempt, now=ctx.clock(), cooldown=cooldown,
                              newest_indexed=max((r.indexed_at for r in fresh if r.indexed_at), default=None))

    # The gate reads the fresh labels only (and their documents' older labels), so a retrain it skips (the weekly
    # fallback with no new label, drift again within the cooldown) costs no scan of every label ever stored.
    fresh, unresolved = ctx.fresh_labels(meta)
    go, why = gate(fresh)
    stored: list[StoredLabel] = []
    # Once more, from the one read the training takes its earlier labels from too (Context.earlier_labels); not after
    # a stop, which the training's first check then ends without that scan of every label.
    if go and not (should_stop is not None and should_stop()):
        stored = ctx.all_labels()
        fresh, unresolved = ctx.fresh_labels(meta, stored)
        go, why = gate(fresh)
    seen = LabelsSeen.of(fresh, label_cutoff(meta, read_at), read_at)
    if not go:
        return skipped(why, fresh, seen)
    try:
        return _train_and_decide(ctx, champion, fresh, stored, len(unresolved), seen, trigger=trigger,
                                 started=started, should_stop=should_stop)
    except TrainingStopped as exc:  # the next drift check, or the next cron run, starts it again
        outcome = Outcome("stopped", [str(exc)], champion_version=champion)
        audit(ctx, outcome, trigger=trigger, started=started, fresh=fresh, seen=seen)
        return outcome
    except Exception as exc:
        log.exception("retrain failed")
        outcome = Outcome("failed", [f"{type(exc).__name__}: {exc}"], champion_version=champion)
        audit(ctx, outcome, trigger=trigger, started=started, fresh=fresh, seen=seen)
        return outcome


def _train_and_decide(ctx: Context, champion: str, fresh: list[ResolvedLabel], stored: list[StoredLabel],
                      unresolved: int, seen: LabelsSeen, *, trigger: str, started: float,
                      should_stop: Callable[[], bool] | None) -> Outcome:
    from model.data import Example
    from model.training import TrainingStopped, train

    s = ctx.settings
    if should_stop is not None and should_stop():  # before the rows, the golden set and the model are loaded
        raise TrainingStopped("stopped before training began")
    fresh_train, fresh_held = split_holdout(fresh, s.retrain_holdout_fraction)
    rows = goldenmod.load_rows(goldenmod.data_paths(s))
    golden = goldenmod.ensure_golden(s, rows, registry=ctx.registry)
    replay = goldenmod.replay_sample(rows, s.retrain_replay_rows, exclude=golden, seed=len(fresh))
    examples = [Example(r.text, r.label, "replay") for r in replay]
    earlier = ctx.earlier_labels(fresh, stored)
    extra = ([Example(r.text, r.label, "fresh") for r in fresh_train]
             + [Example(r.text, r.label, "earlier") for r in earlier])
    # Each fresh label once: train repeats them after its validation split, in the training part only. The
    # earlier labels (held back to judge an earlier challenger, too) are trained on once, never judged again.
    result = train(examples, extra_rows=extra, repeat={"fresh": s.retrain_fresh_repeat},
                   base_model=ctx.registry.path(champion), registry=ctx.registry,
                   parent_version=champion, epochs=s.retrain_epochs, max_steps=s.retrain_max_steps,
                   batch_size=s.retrain_batch_size, eval_max_length=s.max_length, val_fraction=0.1, progress=False,
                   device=s.device,
                   seed=len(fresh), notes={"retrain_trigger": trigger, "fresh_train": len(fresh_train),
                                           "earlier_labels": len(earlier), "replay_rows": len(replay)},
                   should_stop=should_stop)
    challenger = result.version
    # At once: the labels it saw (right should it be promoted by hand), and "undecided" until a decision replaces it
    # (a process killed while it is judged leaves it so, for a prune); a failure from here on names it and marks it
    # "failed"; a stop deletes it (discard_unjudged).
    labels_seen = {"labels_until": seen.until.isoformat(), "labels_read_at": seen.read_at.isoformat()}
    ctx.registry.update_metadata(challenger, **labels_seen, retrain={"decision": "undecided"})
    try:
        golden_rows = [(r.text, r.label) for r in golden]
        held_rows = [(r.text, r.label) for r in fresh_held]
        champion_golden = _evaluate(ctx, champion, golden_rows, should_stop)
        champion_fresh = _evaluate(ctx, champion, held_rows, should_stop)
        challenger_golden = _evaluate(ctx, challenger, golden_rows, should_stop)
        challenger_fresh = _evaluate(ctx, challenger, held_rows, should_stop)
        policy = PromotionPolicy(golden_tolerance=s.retrain_golden_tolerance, min_fresh_gain=s.retrain_min_fresh_gain,
                                 min_fresh_eval=s.retrain_min_fresh_eval, max_p=s.retrain_max_p)
        decision = decide_promotion(champion_golden, challenger_golden, champion_fresh, challenger_fresh, policy)
        if decision.promote and export_missing(s.model_quantize, ctx.registry.path(challenger)):
            # Here, not in a one-off process beside every worker (model.scorer_process). A model that cannot be
            # exported is not promoted: the retrain fails.
            export_challenger(ctx.registry.path(challenger), should_stop, timeout=s.retrain_export_timeout_s)
    except JudgingStopped as exc:  # as a stopped training: no attempt; the next drift check or cron run retrains
        outcome = Outcome("stopped", [str(exc)], champion_version=champion, challenger_version=challenger)
        discard_unjudged(ctx, outcome)
        audit(ctx, outcome, trigger=trigger, started=started, fresh=fresh, seen=seen,
              extra={"pruned_versions": outcome.pruned})
        return outcome
    except Exception as exc:
        log.exception("retrain failed judging %s", challenger)
        ctx.release_scorer(challenger)
        outcome = Outcome("failed", [f"{type(exc).__name__}: {exc}"], champion_version=champion,
                          challenger_version=challenger)
        ctx.registry.update_metadata(challenger, retrain={"decision": "failed", "reasons": outcome.reasons})
        audit(ctx, outcome, trigger=trigger, started=started, fresh=fresh, seen=seen)
        return outcome
    figures = decision.figures | {"unresolved_labels": unresolved}
    champion_now = False
    try:
        ctx.registry.update_metadata(challenger, retrain={"decision": "promoted" if decision.promote else "rejected",
                                                          "figures": figures, "reasons": list(decision.reasons)})
        outcome = Outcome("promoted" if decision.promote else "rejected", list(decision.reasons),
                          champion_version=champion, challenger_version=challenger, figures=figures)
        if decision.promote:
            promote_challenger(ctx, outcome, trigger=trigger)
        champion_now = outcome.decision == "promoted"
    finally:
        # Decided: one rejected or superseded is never scored again, and cached it kept a model's memory until the
        # next check. A new champion stays cached: the next drift check scores it.
        if not champion_now:
            ctx.release_scorer(challenger)
    ctx.metrics.retrain_seconds.set(time.monotonic() - started)
    outcome.pruned = prune_registry(ctx)
    audit(ctx, outcome, trigger=trigger, started=started, fresh=fresh, seen=seen,
          extra={"fresh_train": len(fresh_train), "fresh_heldout": len(fresh_held), "earlier_labels": len(earlier),
                 "replay_rows": len(replay), "pruned_versions": outcome.pruned})
    return outcome


def export_challenger(folder: Path, should_stop: Callable[[], bool] | None, *,
                      timeout: float | None = None) -> None:
    """The challenger's ONNX export, which the workers load (:mod:`model.onnx_runtime`), built while it is judged: a
    stop is :class:`JudgingStopped` (``champion_moves.ensure_export``, a promote's, lets ``ExportStopped`` through). A
    retrain that can be stopped (the scheduler's) runs it in a process of its own, which a stop kills: in this one it
    cannot be cut short, and a stop would wait for it (seconds for MiniLM, longer for a larger model). It is killed too
    after ``timeout`` seconds (FINSENT_RETRAIN_EXPORT_TIMEOUT_S): :class:`ExportTimedOut`, a failed retrain; a hung
    export held the retrain lock until a stop. The commands (`finsent retrain run`, `check --retrain`) stop too, so they
    pay the child's imports (about 8 s for MiniLM) as the scheduler does; a retrain nothing stops (``should_stop`` None)
    exports here, where torch is loaded already."""
    from model.onnx_runtime import ExportStopped, ExportTimedOut, export_apart

    if should_stop is None:
        onnx_file(folder)
        return
    try:
        export_apart(folder, should_stop=should_stop, timeout=timeout)
    except ExportTimedOut as exc:
        raise ExportTimedOut(f"{exc} (FINSENT_RETRAIN_EXPORT_TIMEOUT_S)") from None
    except ExportStopped as exc:
        raise JudgingStopped(f"judging stopped while exporting {folder.name} to ONNX: {exc}") from None


def promote_challenger(ctx: Context, outcome: Outcome, *, trigger: str) -> None:
    """Make the challenger the champion in place of the champion it was compared with — only that one —
    and tell the workers; ``outcome`` (decided "promoted") says what happened.

    A champion promoted or rolled back while the challenger trained stays: the outcome is "superseded".
    A control message that cannot be sent leaves the promotion standing (the registry is the truth and
    workers load the champion when they start): still "promoted", with a warning and the way to tell them."""
    from model.registry import ChampionChanged

    champion, challenger = outcome.champion_version, outcome.challenger_version
    assert champion is not None and challenger is not None
    try:
        moved = ctx.registry.promote(challenger, expected=champion)
    except ChampionChanged as exc:
        outcome.decision = "superseded"
        outcome.reasons.append(f"not promoted: the champion changed to {exc.actual or 'none'} while the challenger "
                               f"trained from {champion}, which is all it was compared with (`finsent model promote "
                               f"{challenger}` promotes it all the same)")
        ctx.registry.update_metadata(challenger, retrain=ctx.registry.get(challenger)["retrain"] | {
            "decision": outcome.decision, "reasons": list(outcome.reasons)})
        return
    message = ControlMessage(
        action="promote", model_version=challenger, model_path=str(ctx.registry.path(challenger)),
        reason=f"retrain ({trigger}): " + "; ".join(outcome.reasons),
        details=flat_details({"previous_version": champion} | outcome.figures), issued_at=ctx.clock(),
        **moved.control_fields())  # workers ignore it if the broker writes it after a later move's message
    try:
        ctx.publish_control(message)
        outcome.workers_notified = True
    except Exception as exc:  # Kafka away: the promotion stands, only the announcement is missing
        outcome.workers_notified = False
        outcome.warnings.append(
            f"promoted, but the control message on {ctx.settings.topic('control')} failed ({type(exc).__name__}: "
            f"{exc}): running workers may keep scoring with {champion} until they restart; to tell them, run "
            f"`finsent model promote {challenger}` (it sends the message again)")
        ctx.metrics.retrain_unannounced.inc()
    outcome.figures["workers_notified"] = outcome.workers_notified


def discard_unjudged(ctx: Context, outcome: Outcome) -> None:
    """The challenger of a retrain stopped while judging it leaves the registry at once: nothing resumes a judging
    (the next retrain trains a new challenger on the labels of its day), so it would only wait, undecided, for a
    prune. It stays, undecided, when promoted by hand meanwhile, held by a worker, or not deletable; the reason
    says which (and is in its metadata)."""
    from model.registry import RegistryError

    challenger = outcome.challenger_version
    assert challenger is not None
    ctx.release_scorer(challenger)  # deleted or not, nothing scores it again
    try:
        ctx.registry.discard(challenger)
    except (OSError, RegistryError) as exc:
        outcome.reasons.append(f"{challenger} stays registered, undecided: {exc}")
        ctx.registry.update_metadata(challenger, retrain={"decision": "undecided", "reasons": list(outcome.reasons)})
        return
    outcome.pruned = [challenger]
    outcome.reasons.append(f"{challenger} deleted, its judging unfinished (the next retrain trains a new one)")


def prune_registry(ctx: Context) -> list[str]:
    """Each retrain registers a version, promoted or not: delete the old ones (``model_keep_versions``).
    A failure is logged: the retrain's outcome stands."""
    from model.registry import RegistryError

    keep = ctx.settings.model_keep_versions
    if not keep:
        return []
    try:
        return ctx.registry.prune(keep)
    except (OSError, RegistryError) as exc:
        log.warning("could not prune the model registry %s: %s", ctx.registry.root, exc)
        return []
