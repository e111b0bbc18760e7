"""When to retrain and whether to promote: pure decisions over figures, unit-tested alone.

Promotion rule: the challenger replaces the champion only if

- on the fixed golden set its macro-F1 is not below the champion's by more than
  ``golden_tolerance`` (no forgetting of what the model knew), AND
- on the held-back fresh labels its macro-F1 beats the champion's by more than
  ``min_fresh_gain`` (it learned what changed), with at least ``min_fresh_eval`` of them, AND
- on those labels, of the ones only one of the two gets right, the challenger gets enough: a
  one-sided sign test's p-value at most ``max_p``. With ten labels a macro-F1 gain is often luck
  (an equal challenger won about half the time, one 10 points worse a third).

Retrain gate: drift was detected (or the cron fallback fired), at least ``min_labels`` fresh
labels exist, and — if an earlier attempt was made — the cooldown has passed and labels have
arrived since that attempt (retraining on the very same data would decide the same way). A failed
attempt decided nothing, so only its cooldown applies: its cause may have passed (Elasticsearch
away, a full disk), and waiting for a new label could hold the retrain back for days. The checks
that need no label (drift, cooldown: :func:`skip_before_labels`) come first, so a retrain they skip
reads no label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    n: int
    correct: tuple[bool, ...] = ()  # per row, in the rows' order: which the model got right (for the sign test)


@dataclass(frozen=True)
class PromotionPolicy:
    golden_tolerance: float = 0.02
    min_fresh_gain: float = 0.0
    min_fresh_eval: int = 10
    max_p: float = 0.2  # 1: no sign test


def sign_test(champion: Sequence[bool], challenger: Sequence[bool]) -> tuple[int, int, float]:
    """(rows only the challenger gets right, rows only the champion gets right, the one-sided p-value of the
    first count if either were as likely to win such a row). No such row: p 1."""
    from scipy.stats import binomtest

    wins = sum(1 for old, new in zip(champion, challenger, strict=True) if new and not old)
    losses = sum(1 for old, new in zip(champion, challenger, strict=True) if old and not new)
    p = binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue if wins + losses else 1.0
    return wins, losses, float(p)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: tuple[str, ...]
    figures: dict[str, Any] = field(default_factory=dict)


def decide_promotion(champion_golden: Scores, challenger_golden: Scores, champion_fresh: Scores,
                     challenger_fresh: Scores, policy: PromotionPolicy = PromotionPolicy()) -> Decision:
    golden_drop = champion_golden.macro_f1 - challenger_golden.macro_f1
    fresh_gain = challenger_fresh.macro_f1 - champion_fresh.macro_f1
    figures: dict[str, Any] = {
        "golden_drop": round(golden_drop, 6), "fresh_gain": round(fresh_gain, 6),
        "golden_tolerance": policy.golden_tolerance, "min_fresh_gain": policy.min_fresh_gain,
    }
    for name, scores in (("champion_golden", champion_golden), ("challenger_golden", challenger_golden),
                         ("champion_fresh", champion_fresh), ("challenger_fresh", challenger_fresh)):
        figures |= {f"{name}_{k}": v for k, v in asdict(scores).items() if k != "correct"}
    tested = bool(champion_fresh.correct) and len(champion_fresh.correct) == len(challenger_fresh.correct)
    if tested:
        wins, losses, p = sign_test(champion_fresh.correct, challenger_fresh.correct)
        figures |= {"fresh_only_challenger_right": wins, "fresh_only_champion_right": losses,
                    "fresh_sign_p": round(p, 6), "max_p": policy.max_p}

    reasons = []
    if challenger_golden.n == 0:
        reasons.append("golden set is empty")
    elif golden_drop > policy.golden_tolerance:
        reasons.append(f"worse on the golden set: macro-F1 {challenger_golden.macro_f1:.4f} vs champion "
                       f"{champion_golden.macro_f1:.4f} (drop {golden_drop:.4f} > tolerance {policy.golden_tolerance})")
    if challenger_fresh.n < policy.min_fresh_eval:
        reasons.append(f"only {challenger_fresh.n} held-back fresh labels (need {policy.min_fresh_eval})")
    elif fresh_gain <= policy.min_fresh_gain:
        reasons.append(f"not better on fresh labels: macro-F1 {challenger_fresh.macro_f1:.4f} vs champion "
                       f"{champion_fresh.macro_f1:.4f} (gain {fresh_gain:.4f} <= {policy.min_fresh_gain})")
    elif tested and p > policy.max_p:
        reasons.append(f"not shown better on fresh labels: right on {wins} the champion got wrong, wrong on {losses} "
                       f"it got right (one-sided sign test p {p:.3f} > {policy.max_p})")
    if reasons:
        return Decision(False, tuple(reasons), figures)
    return Decision(True, (f"golden drop {golden_drop:.4f} within {policy.golden_tolerance}; "
                           f"fresh gain {fresh_gain:.4f}",), figures)


@dataclass(frozen=True)
class LastAttempt:
    at: datetime
    labels_until: datetime | None
    failed: bool = False
    labels_read_at: datetime | None = None  # None: an attempt from before it was recorded


def should_retrain(*, trigger: str, drift_detected: bool, fresh_labels: int, newest_label: datetime | None,
                   min_labels: int, last_attempt: LastAttempt | None, now: datetime,
                   cooldown: timedelta, newest_indexed: datetime | None = None) -> tuple[bool, str]:
    """(go, why). ``trigger`` is "drift", "cron" or "manual" (manual skips drift and cooldown).
    ``newest_label`` and ``newest_indexed``: the newest ``labeled_at`` and ``indexed_at`` of the fresh
    labels; a label is new to the last attempt if it is dated after what that attempt saw, or was
    stored after it read the labels (a label dated back)."""
    early = skip_before_labels(trigger=trigger, drift_detected=drift_detected, last_attempt=last_attempt, now=now,
                               cooldown=cooldown)
    if early is not None:
        return False, early
    if fresh_labels < min_labels:
        return False, f"{fresh_labels} fresh labels, need {min_labels}"
    if trigger != "manual" and last_attempt is not None:
        until = None if last_attempt.failed else last_attempt.labels_until
        # An attempt that recorded a labels_until ahead of now saw a label dated ahead (before intake
        # refused those); honoured, it would hold back every label to come.
        stored_since = (newest_indexed is not None and last_attempt.labels_read_at is not None
                        and newest_indexed > last_attempt.labels_read_at)
        if until is not None and until <= now and (newest_label is None or newest_label <= until) and not stored_since:
            return False, "no labels since the last attempt"
    return True, f"{trigger}: {fresh_labels} fresh labels"


def skip_before_labels(*, trigger: str, drift_detected: bool, last_attempt: LastAttempt | None, now: datetime,
                       cooldown: timedelta) -> str | None:
    """Why :func:`should_retrain` skips whatever the labels: no drift, or the last attempt within the cooldown; None
    when the labels decide. A retrain asks this before it reads any label, so that a drift check skipped (every one
    of a cooldown) costs no query."""
    if trigger == "drift" and not drift_detected:
        return "no drift detected"
    if trigger != "manual" and last_attempt is not None and now - last_attempt.at < cooldown:
        return f"last attempt at {last_attempt.at.isoformat()} is within the cooldown of {cooldown}"
    return None
