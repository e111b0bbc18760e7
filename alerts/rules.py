"""The rules file: alert rules and the webhooks they deliver to, validated once at start-up.

A rules file is YAML::

    webhooks:
      ops: {url: "https://hooks.example.com/finsent", format: json}
    rules:
      - {name: shift, kind: sentiment_shift, threshold: 3, min_count: 20, webhooks: [ops]}

Any mistake raises :class:`RulesError` whose lines name the rule (by its ``name``, or its
position when it has none) and the field, e.g. ``rule 'shift' (rules[0]) field 'threshold':
Input should be greater than 0``. Filters that could never match are mistakes too: tickers are
normalised as ingest writes them (``brk-b`` → ``BRK.B``), and given the stream's windows
(``FINSENT_WINDOWS``) a rule's window must be one of them (``60m`` is read as the stream's ``1h``); a drift
rule's monitors are those the drift check publishes, and ``min_history`` at most the windows a restart reads back.
Values may name environment variables, ``${NAME}`` or ``${NAME:-default}`` (:mod:`alerts.env_refs`).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union

import httpx
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from alerts.env_refs import UnsetVariable, expand
from alerts.ticker_state import HISTORY_WINDOWS
from finsent.durations import format_duration, parse_duration
from finsent.tagged_unions import union_tags
from finsent.window_sizes import parse_window, parse_windows
from finsent.yaml_errors import yaml_problem
from finsent.yaml_loading import load_yaml
from ingest.tickers import normalise_ticker
from retrain.drift import InputDrift, PerformanceDrift, PredictionDrift, confidence_monitor

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
_FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110), with fullmatch
_NOT_FIELD_VALUE = re.compile(r"[^\t\x20-\x7e]")  # a value is one line of printable ASCII, what httpx encodes
# The monitors whose names a drift check publishes (retrain.drift_check): a rule naming another never fires.
DRIFT_MONITORS = tuple(sorted(m.name for m in (PredictionDrift, confidence_monitor(), InputDrift, PerformanceDrift)))


class RulesError(ValueError):
    """The rules file is missing, not YAML, or has invalid rules; the message says where."""


def _shown(url: str) -> str:
    """A webhook URL for an error message: its scheme and host only, since a path may hold a token. So may a user
    part, which a malformed URL can make look like a host or port: with an @ anywhere, the scheme alone."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#]*)(.?)", url)
    if not match:
        return "the URL"
    if "@" in url:
        return repr(match.group(1) + "…")
    return repr(match.group(1) + match.group(2) + ("/…" if match.group(3) else ""))


def _sendable_url(value: str) -> str:
    """Refuse what httpx parses but can never send: otherwise every delivery to it fails."""
    try:
        url = httpx.URL(value)
        url.host.encode("idna")  # as getaddrinfo and TLS encode the host: empty or over-long labels fail
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        reason = re.sub(r"'[^']*'", "'…'", str(exc))  # httpx quotes the part it refused, a token's included
        raise ValueError(f"{_shown(value)} is not a URL that can be posted to: {reason}") from None
    if not url.host:
        raise ValueError(f"{_shown(value)} has no host")
    if url.port is not None and not 0 < url.port <= 65535:
        raise ValueError(f"{_shown(value)}: port {url.port} is not between 1 and 65535")
    return value


def _sendable_headers(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"header name {name!r} is not an HTTP token (letters, digits, -_.!#$%&'*+^`|~)")
        if bad := _NOT_FIELD_VALUE.search(text):
            # the value itself may be a token: say where it goes wrong, not what it is
            raise ValueError(f"header {name!r}: the value must be one line of printable ASCII; character "
                             f"{bad.start() + 1} of {len(text)} is {bad.group()!r}")
    return value


def _strong_secret(value: SecretStr) -> SecretStr:
    if len(value.get_secret_value()) < 16:  # the message never shows the value
        raise ValueError("a webhook secret needs at least 16 characters (generate one with: "
                         "python -c 'import secrets; print(secrets.token_hex(32))')")
    return value


def _known_tickers(value: list[str]) -> list[str]:
    """Tickers as ingest writes them: a rule for ``aapl`` or ``BRK-B`` would never match otherwise."""
    tickers: list[str] = []
    for raw in value:
        ticker = normalise_ticker(raw)
        if ticker is None:
            raise ValueError(f"{raw!r} is not a ticker symbol such as AAPL or BRK.B")
        if ticker not in tickers:
            tickers.append(ticker)
    return tickers


def _emitted_windows(value: list[str], info: ValidationInfo) -> list[str]:
    """Windows by the stream's names; unchecked when the caller did not say which the stream emits."""
    emitted: dict[str, int] | None = (info.context or {}).get("windows")
    windows: list[str] = []
    for window in value:
        seconds = parse_window(window)
        if emitted is not None and window not in emitted:
            same = [name for name, size in emitted.items() if size == seconds]
            if not same:
                raise ValueError(f"the stream emits no {window!r} windows (FINSENT_WINDOWS: {', '.join(emitted)})")
            window = same[0]  # 60m is the stream's 1h
        if window not in windows:
            windows.append(window)
    return windows


def _known_monitors(value: list[str]) -> list[str]:
    for name in value:
        if name not in DRIFT_MONITORS:
            raise ValueError(f"unknown drift monitor {name!r} (monitors: {', '.join(DRIFT_MONITORS)})")
    return value


def _restorable_history(value: int) -> int:
    """No more earlier windows than the engine keeps, and reads back at its start: beyond that, a rule would stay
    silent after every restart until that many windows closed (days, for hourly windows)."""
    if value > HISTORY_WINDOWS:
        raise ValueError(f"at most {HISTORY_WINDOWS}, the closed windows the engine keeps of each ticker and window "
                         "(and reads back at its start)")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
MinHistory = Annotated[int, Field(ge=2), AfterValidator(_restorable_history)]
Window = Annotated[str, Field(pattern=r"^\d+[smhd]$")]
Windows = Annotated[list[Window], AfterValidator(_emitted_windows)]
Tickers = Annotated[list[str], AfterValidator(_known_tickers)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Webhook(_Strict):
    """Where alerts go, and how hard to try."""

    url: Annotated[str, Field(pattern=r"^https?://\S+$"), AfterValidator(_sendable_url)]
    format: Literal["json", "slack"] = "json"
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    give_up_after: Duration = Field(
        timedelta(hours=24), description="a delivery still failing this long after it was queued is dead-lettered")
    max_attempts: Annotated[int, Field(ge=1, le=10_000)] | None = Field(
        None, description="also dead-letter after this many attempts, when they come before give_up_after")
    backoff_initial: Duration = timedelta(seconds=2)
    backoff_max: Duration = timedelta(minutes=10)
    headers: Annotated[dict[str, str], AfterValidator(_sendable_headers)] = Field(default_factory=dict)
    secret: Annotated[SecretStr, AfterValidator(_strong_secret)] | None = Field(
        None, description="signs this webhook's bodies instead of FINSENT_ALERTS_WEBHOOK_SECRET: a receiver that "
                          "knows a shared secret could sign alerts for every other webhook")

    def signing_secret(self, default: str) -> str:
        """The key that signs this webhook's bodies: its own secret, else ``default`` (the shared one)."""
        return self.secret.get_secret_value() if self.secret is not None else default

    @model_validator(mode="after")
    def _backoff_order(self) -> Webhook:
        if self.backoff_initial <= timedelta(0):
            raise ValueError("backoff_initial must be positive")
        if self.backoff_max < self.backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        if self.give_up_after <= timedelta(0):
            raise ValueError("give_up_after must be positive")
        return self

    def backoff_step(self, attempt: int) -> float:
        """Seconds between attempt ``attempt`` and the next before jitter: doubling from backoff_initial, capped."""
        # The exponent is capped: 2.0 ** 1024 overflows, and a day of 1 s backoffs is 86,400 attempts.
        doublings = min(max(0, attempt - 1), 60)
        return min(self.backoff_max.total_seconds(), self.backoff_initial.total_seconds() * 2.0 ** doublings)

    def backoff_warning(self) -> str | None:
        """Why retries end before they ever wait backoff_max, if they do (``finsent alerts check`` shows it)."""
        first_full, elapsed = 1, 0.0  # the attempt after which the wait is backoff_max, and when it is made
        while self.backoff_step(first_full) < self.backoff_max.total_seconds():
            elapsed += self.backoff_step(first_full)
            first_full += 1
        cap = format_duration(self.backoff_max)
        if self.max_attempts == 1:
            return f"max_attempts 1 never retries: backoff_initial and backoff_max {cap} are never used"
        if self.max_attempts is not None and self.max_attempts <= first_full:
            spent = sum(self.backoff_step(n) for n in range(1, self.max_attempts))
            return (f"max_attempts {self.max_attempts} gives up about {_approx(spent)} after the first attempt, its "
                    f"longest wait {_approx(self.backoff_step(self.max_attempts - 1))}: backoff_max {cap} is never "
                    "reached (drop max_attempts and let give_up_after decide)")
        if self.give_up_after.total_seconds() < elapsed + self.backoff_max.total_seconds():
            return (f"give_up_after {format_duration(self.give_up_after)} ends the retries before one waits "
                    f"backoff_max {cap} (about {_approx(elapsed)} of shorter waits come first)")
        return None


def _approx(seconds: float) -> str:
    """A span for a person: 128 s, 17 min, 3.5 h."""
    if seconds < 180:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


class _Rule(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    cooldown: Duration = timedelta(minutes=15)
    webhooks: list[str] = Field(default_factory=list, description="names of webhooks (default: all)")
    enabled: bool = True
    description: str | None = None


class _TickerRule(_Rule):
    tickers: Tickers = Field(default_factory=list, description="only these tickers (default: all)")
    top_documents: Annotated[int, Field(ge=0, le=50)] = 5
    max_age: Duration = Field(
        timedelta(hours=6), description="news no older than this raises an alert: the window's end, or the burst's "
                                        "newest document, before now (a backlog, a backfill or a replay of last "
                                        "week's documents raises none); 0: no limit")

    def matches_ticker(self, ticker: str) -> bool:
        return not self.tickers or ticker in self.tickers


class SentimentShiftRule(_TickerRule):
    """|z| of a window's mean score against its trailing baseline >= threshold."""

    kind: Literal["sentiment_shift"]
    threshold: Annotated[float, Field(gt=0)]
    min_count: Annotated[int, Field(ge=1)] = 10
    direction: Literal["both", "up", "down"] = "both"
    windows: Windows = Field(default_factory=list, description="only these windows (default: all)")
    min_history: MinHistory = Field(
        5, description="earlier windows behind the z-score: the stream's FINSENT_WINDOW_MIN_BASELINE, or as many "
                       "the engine saw close (or read back at its start)")


class VolumeSpikeRule(_TickerRule):
    """Volume z-score of a window >= threshold."""

    kind: Literal["volume_spike"]
    threshold: Annotated[float, Field(gt=0)]
    min_count: Annotated[int, Field(ge=1)] = 10
    windows: Windows = Field(default_factory=list)
    min_history: MinHistory = Field(
        5, description="earlier windows behind the z-score: the stream's FINSENT_WINDOW_MIN_BASELINE, or as many "
                       "the engine saw close (or read back at its start)")


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
    monitors: Annotated[list[str], AfterValidator(_known_monitors)] = Field(
        default_factory=list, description="only these drift monitors (default: any)")


Rule = Annotated[
    Union[SentimentShiftRule, VolumeSpikeRule, NegativeBurstRule, ModelRule, DriftRule],
    Field(discriminator="kind"),
]
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

    def warnings(self) -> list[str]:
        """What is valid but likely not meant: retries that end before they ever wait backoff_max."""
        return [f"webhook {name!r}: {warning}" for name, hook in self.webhooks.items()
                if (warning := hook.backoff_warning())]


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
        elif len(loc) >= 3 and loc[0] == "webhooks":
            problems.append(f"webhook {loc[1]!r} field {'.'.join(str(p) for p in loc[2:])!r}: {msg}")
        elif loc:
            problems.append(f"field {'.'.join(str(p) for p in loc)!r}: {msg}")
        else:
            problems.append(msg)
    return problems


def parse_rules(raw: Any, source: str = "rules", *, windows: str | None = None) -> RulesFile:
    """Validate an already-loaded YAML document; ``windows`` is the stream's ``FINSENT_WINDOWS``."""
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: expected a mapping with 'rules' (and 'webhooks'), got {type(raw).__name__}")
    try:
        emitted = parse_windows(windows) if windows is not None else None
    except ValueError as exc:
        raise RulesError(f"{source}: FINSENT_WINDOWS: {exc}") from None
    try:
        return RulesFile.model_validate(raw, context={"windows": emitted})
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


def load_rules(path: Path | str, *, windows: str | None = None, environ: Mapping[str, str] | None = None) -> RulesFile:
    """Read and validate a rules file, its ``${NAME}`` references read from ``environ`` (default: this process's
    environment); every failure is a :class:`RulesError` naming the file. Unlike :func:`parse_rules`, which
    rule tests use, it refuses a file without webhooks: ``finsent alerts run`` would deliver to no one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the rules file: {exc.strerror or exc}") from None
    try:
        raw = load_yaml(text)  # a second `rules:` or webhook is refused, not silently kept over the first
    except yaml.YAMLError as exc:
        raise RulesError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None  # the text may hold a token
    try:
        raw = expand(raw, os.environ if environ is None else environ)
    except UnsetVariable as exc:
        raise RulesError(f"{path}: {exc}") from None
    rules = parse_rules(raw, str(path), windows=windows)
    if not rules.webhooks:  # the engine would raise alerts that reach no one, yet look sent
        raise RulesError(f"{path}: no webhooks: define at least one under 'webhooks:' for the alerts to go to "
                         "(alerts/WEBHOOKS.md)")
    return rules
