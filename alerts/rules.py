"""The rules file: alert rules and the webhooks they deliver to, validated once at start-up.

A rules file is YAML::

    webhooks:
      ops: {url: "https://hooks.example.com/finsent", format: json}
    rules:
      - {name: shift, kind: sentiment_shift, threshold: 3, min_count: 20, webhooks: [ops]}

Any mistake raises :class:`RulesError` whose lines name the rule (by its ``name``, or its
position when it has none) and the field, e.g. ``rule 'shift' (rules[0]) field 'threshold':
Input should be greater than 0``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from finsent.durations import parse_duration
from finsent.tagged_unions import union_tags

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class RulesError(ValueError):
    """The rules file is missing, not YAML, or has invalid rules; the message says where."""


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Window = Annotated[str, Field(pattern=r"^\d+[smhd]$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Webhook(_Strict):
    """Where alerts go, and how hard to try."""

    url: Annotated[str, Field(pattern=r"^https?://\S+$")]
    format: Literal["json", "slack"] = "json"
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    backoff_initial: Duration = timedelta(seconds=2)
    backoff_max: Duration = timedelta(minutes=10)
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _backoff_order(self) -> Webhook:
        if self.backoff_initial <= timedelta(0):
            raise ValueError("backoff_initial must be positive")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        return self


class _Rule(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    cooldown: Duration = timedelta(minutes=15)
    webhooks: list[str] = Field(default_factory=list, description="names of webhooks (default: all)")
    enabled: bool = True
    description: str | None = None


class _TickerRule(_Rule):
    tickers: list[str] = Field(default_factory=list, description="only these tickers (default: all)")
    top_documents: Annotated[int, Field(ge=0, le=50)] = 5

    def matches_ticker(self, ticker: str) -> bool:
        return not self.tickers or ticker in self.tickers


class SentimentShiftRule(_TickerRule):
    """|z| of a window's mean score against its trailing baseline >= threshold."""

    kind: Literal["sentiment_shift"]
    threshold: Annotated[float, Field(gt=0)]
    min_count: Annotated[int, Field(ge=1)] = 10
    direction: Literal["both", "up", "down"] = "both"
    windows: list[Window] = Field(default_factory=list, description="only these windows (default: all)")
    min_history: Annotated[int, Field(ge=2)] = 5


class VolumeSpikeRule(_TickerRule):
    """Volume z-score of a window >= threshold."""

    kind: Literal["volume_spike"]
    threshold: Annotated[float, Field(gt=0)]
    min_count: Annotated[int, Field(ge=1)] = 10
    windows: list[Window] = Field(default_factory=list)
    min_history: Annotated[int, Field(ge=2)] = 5


class NegativeBurstRule(_TickerRule):
    """At least ``count`` negative documents with confidence >= ``min_confidence`` within ``within``."""

    kind: Literal["negative_burst"]
    count: Annotated[int, Field(ge=1, le=10_000)]
    min_confidence: Annotated[float, Field(ge=0, le=1)] = 0.8
    within: Duration

    @model_validator(mode="after")
    def _positive_within(self) -> NegativeBurstRule:
        if self.within <= timedelta(0):
            raise ValueError("within must be positive")
        return self


class ModelRule(_Rule):
    """A model was promoted or rolled back (``finsent.control``)."""

    kind: Literal["model"]
    actions: list[Literal["promote", "rollback"]] = Field(default_factory=lambda: ["promote", "rollback"])
    cooldown: Duration = timedelta(0)


class DriftRule(_Rule):
    """A drift check fired (``finsent.control`` action ``drift``)."""

    kind: Literal["drift"]
    monitors: list[str] = Field(default_factory=list, description="only these details.monitor values")


Rule = Annotated[
    Union[SentimentShiftRule, VolumeSpikeRule, NegativeBurstRule, ModelRule, DriftRule],
    Field(discriminator="kind"),
]
TickerRule = SentimentShiftRule | VolumeSpikeRule | NegativeBurstRule
RULE_KINDS = union_tags(Rule)


class RulesFile(_Strict):
    webhooks: dict[Annotated[str, Field(pattern=_NAME)], Webhook] = Field(default_factory=dict)
    rules: Annotated[list[Rule], Field(min_length=1)]
    dashboard_url: str | None = Field(None, description="overrides FINSENT_ALERTS_DASHBOARD_URL")

    @model_validator(mode="after")
    def _references(self) -> RulesFile:
        seen: set[str] = set()
        for index, rule in enumerate(self.rules):
            if rule.name in seen:
                raise _RuleProblem(index, "name", f"duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            for hook in rule.webhooks:
                if hook not in self.webhooks:
                    known = ", ".join(sorted(self.webhooks)) or "none defined"
                    raise _RuleProblem(index, "webhooks", f"unknown webhook {hook!r} (known: {known})")
        return self

    def enabled_rules(self) -> list[Rule]:
        return [rule for rule in self.rules if rule.enabled]

    def webhooks_of(self, rule: _Rule) -> list[str]:
        return list(rule.webhooks) if rule.webhooks else sorted(self.webhooks)


class _RuleProblem(ValueError):
    def __init__(self, index: int, field: str, message: str) -> None:
        super().__init__(message)
        self.index, self.field, self.message = index, field, message


def _rule_label(raw: Any, index: int) -> str:
    rules = raw.get("rules") if isinstance(raw, dict) else None
    name = None
    if isinstance(rules, list) and index < len(rules) and isinstance(rules[index], dict):
        name = rules[index].get("name")
    return f"rule {name!r} (rules[{index}])" if name else f"rule rules[{index}]"


def _describe(raw: Any, exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_not_found":  # pydantic: "Unable to extract tag using discriminator 'kind'"
            msg = f"missing; say which kind of rule it is ({', '.join(RULE_KINDS)})"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            where = _rule_label(raw, loc[1])
            rest = loc[2:]
            # pydantic puts the chosen union member (the kind) in the path: drop it.
            if rest and rest[0] in RULE_KINDS:
                rest = rest[1:]
            field = ".".join(str(p) for p in rest) or "kind"
            problems.append(f"{where} field {field!r}: {msg}")
        elif loc:
            problems.append(f"field {'.'.join(str(p) for p in loc)!r}: {msg}")
        else:
            problems.append(msg)
    return problems


def parse_rules(raw: Any, source: str = "rules") -> RulesFile:
    """Validate an already-loaded YAML document."""
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: expected a mapping with 'rules' (and 'webhooks'), got {type(raw).__name__}")
    try:
        return RulesFile.model_validate(raw)
    except _RuleProblem as problem:
        raise RulesError(f"{source}: {_rule_label(raw, problem.index)} field {problem.field!r}: {problem.message}") from None
    except ValidationError as exc:
        for err in exc.errors():
            cause = (err.get("ctx") or {}).get("error")
            if isinstance(cause, _RuleProblem):
                raise RulesError(
                    f"{source}: {_rule_label(raw, cause.index)} field {cause.field!r}: {cause.message}"
                ) from None
        raise RulesError(f"{source}: invalid rules:\n  " + "\n  ".join(_describe(raw, exc))) from None


def load_rules(path: Path | str) -> RulesFile:
    """Read and validate a rules file; every failure is a :class:`RulesError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {exc}") from None
    return parse_rules(raw, str(path))
