"""Drift checks, retrains and the scheduler against the real Kafka, Elasticsearch and a tiny model."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from elasticsearch import helpers

from finsent import clients
from finsent.schemas import LabelRecord, utc_now
from model.data import load_file, text_fingerprint
from model.registry import Registry
from retrain.context import Context
from retrain.drift_check import run_check
from retrain.golden import first_model_held_out
from retrain.label_store import index_labels
from retrain.retraining import run_retrain
from retrain.scheduler import CHECK_JOB, RetrainScheduler
from tests.topic_reading import topic_held

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WORDS = "shares company quarter revenue market stock earnings sales results guidance outlook board".split()
NEW_WORDS = "memecoin airdrop tokenomics staking defi rugpull hodl whale nft blockchain".split()
LABELS = ("negative", "neutral", "positive")
T0 = datetime.now(UTC) - timedelta(hours=2)


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def rsettings(bootstrapped, model_registry, tmp_path):
    return bootstrapped.model_copy(update={
        "model_dir": model_registry.root, "state_dir": tmp_path / "state", "device": "cpu",
        "retrain_data": str(SHARED_DATA), "golden_size": 30, "retrain_replay_rows": 40, "retrain_max_steps": 3,
        "retrain_batch_size": 8, "retrain_epochs": 1, "retrain_min_labels": 20, "retrain_min_fresh_eval": 1,
        "retrain_holdout_fraction": 0.3, "retrain_cron": "", "drift_reference_size": 60, "drift_window_size": 40,
        "drift_min_labels": 20,
    })


def scored(i: int, version: str, rng: random.Random, drifted: bool) -> dict:
    weights = [0.7, 0.2, 0.1] if drifted else [0.3, 0.5, 0.2]
    label = rng.choices(LABELS, weights=weights)[0]
    conf = min(0.98, max(0.4, rng.gauss(0.55 if drifted else 0.85, 0.05)))
    probs = {k: (conf if k == label else (1 - conf) / 2) for k in LABELS}
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 14))]
    if drifted:
        words += [rng.choice(NEW_WORDS) for _ in range(5)]
    at = (T0 + timedelta(seconds=i)).isoformat()
    return {"id": f"doc{i:05d}", "source": "test", "source_id": str(i), "url": None, "title": None,
            "text": " ".join(words), "lang": "en", "tickers": [], "published_at": at, "ingested_at": at,
            "scored_at": at, "indexed_at": at, "model_version": version,
            "sentiment": {"label": label, "score": probs["positive"] - probs["negative"], "probabilities": probs,
                          "confidence": conf}}


def index_docs(settings, version: str, *, drifting: bool, n_ref: int = 60, n_win: int = 40, seed: int = 1) -> None:
    rng = random.Random(seed)
    docs = [scored(i, version, rng, drifted=drifting and i >= n_ref) for i in range(n_ref + n_win)]
    with clients.elasticsearch(settings) as es:
        helpers.bulk(es, ({"_index": settings.index("docs"), "_id": d["id"], "_source": d} for d in docs),
                     refresh="wait_for")


def index_fresh_labels(settings, n: int = 30, seed: int = 2, first: int = 0, stored_ago: timedelta = timedelta(0)
                       ) -> None:
    """``n`` labels of documents lab<first>…, dated a minute apart from T0 + ``first`` minutes, stored
    ``stored_ago`` before now (a label stored within a retrain's last 30 s is fresh to the next one too)."""
    rng = random.Random(seed)
    cue = {"negative": "plunged", "neutral": "unchanged", "positive": "soared"}
    records = []
    for i in range(first, first + n):
        label = LABELS[i % 3]
        text = f"{rng.choice(NEW_WORDS)} {rng.choice(WORDS)} {cue[label]} {i}"
        records.append(LabelRecord(doc_id=f"lab{i}", text=text, label=label, annotator="analyst",
                                   labeled_at=T0 + timedelta(minutes=i)))
    with clients.elasticsearch(settings) as es:
        report = index_labels(es, settings, records, refresh=True, now=utc_now() - stored_ago)
    assert report.indexed == n


def control_messages(settings) -> list[dict]:
    """What the control topic holds; call it once the senders are done (each waits for the broker's ack)."""
    return [orjson.loads(m.value) for m in topic_held(settings, "control")]


def audit_records(settings) -> list[dict]:
    with clients.elasticsearch(settings) as es:
        es.indices.refresh(index=settings.index("retrain"))
        resp = es.search(index=settings.index("retrain"), size=100, sort=[{"decided_at": "asc"}])
    return [h["_source"] for h in resp["hits"]["hits"]]


def test_stable_stream_triggers_no_retrain(rsettings, model_registry) -> None:
    index_docs(rsettings, model_registry.champion(), drifting=False)
    with Context.open(rsettings) as ctx:
        for _ in range(2):
            report = run_check(ctx)
            assert report.model_version == model_registry.champion()
            assert not report.drift_detected, report.summary()
            assert all(r.statistic is not None for r in report.results if r.monitor != "performance")
            outcome = run_retrain(ctx, trigger="drift", drift_detected=report.drift_detected)
            assert outcome.decision == "skipped"
    assert audit_records(rsettings) == []
    assert not [m for m in control_messages(rsettings) if m["action"] in ("drift", "promote")]
    with clients.elasticsearch(rsettings) as es:
        es.indices.refresh(index=rsettings.index("drift"))
        recorded = es.search(index=rsettings.index("drift"), size=50)["hits"]["hits"]
    assert {h["_source"]["monitor"] for h in recorded} == {"prediction", "confidence", "input", "performance"}
    assert len(recorded) == 8 and not any(h["_source"]["drift_detected"] for h in recorded)


def test_drifting_stream_triggers_exactly_one_retrain(rsettings, model_registry) -> None:
    champion = model_registry.champion()
    index_docs(rsettings, champion, drifting=True)
    index_fresh_labels(rsettings)
    settings = rsettings.model_copy(update={"drift_check_minutes": 0.02})  # a check every 1.2 s
    sched = RetrainScheduler(settings).start()
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not any(o.decision in ("promoted", "rejected") for o in sched.outcomes):
            time.sleep(0.5)
        checks_then = sched.checks
        while time.monotonic() < deadline and sched.checks < checks_then + 3:
            time.sleep(0.5)  # a few more checks after the retrain: none may retrain again
        time.sleep(2)
    finally:
        sched.shutdown()
    attempts = [o for o in sched.outcomes if o.decision in ("promoted", "rejected", "failed")]
    assert len(attempts) == 1, [(o.decision, o.reasons) for o in sched.outcomes]
    assert attempts[0].decision in ("promoted", "rejected"), attempts[0].reasons
    audits = [a for a in audit_records(settings) if a["decision"] in ("promoted", "rejected", "failed")]
    assert len(audits) == 1 and audits[0]["trigger"] == "drift"
    assert audits[0]["champion_version"] == champion and audits[0]["challenger_golden_f1"] is not None
    assert audits[0]["fresh_labels"] == 30 and audits[0]["fresh_heldout"] >= 1
    drift_msgs = [m for m in control_messages(settings) if m["action"] == "drift"]
    assert drift_msgs and drift_msgs[0]["model_version"] == champion
    assert "prediction" in drift_msgs[0]["reason"]


def test_challenger_worse_on_golden_is_rejected(rsettings, model_registry, tmp_path) -> None:
    champion = model_registry.champion()
    index_fresh_labels(rsettings)
    stand_in = tmp_path / "old-model"  # an earlier rejected challenger, say: the prune afterwards deletes it
    stand_in.mkdir()
    (stand_in / "config.json").write_text("{}")
    old = model_registry.register(stand_in, {"base_model": "b"})
    # A tolerance below zero demands a golden gain no model reaches: the golden rule must reject.
    settings = rsettings.model_copy(update={"retrain_golden_tolerance": -1.0, "model_keep_versions": 1})
    with Context.open(settings) as ctx:
        outcome = run_retrain(ctx, trigger="manual")
    assert outcome.decision == "rejected", outcome.reasons
    assert outcome.pruned == [old] and not model_registry.exists(old)
    assert model_registry.exists(outcome.challenger_version) and model_registry.exists(champion)
    assert any("worse on the golden set" in r for r in outcome.reasons)
    assert model_registry.champion() == champion
    challenger_meta = model_registry.get(outcome.challenger_version)
    assert challenger_meta["labels_until"] and challenger_meta["labels_read_at"]
    (audit,) = audit_records(settings)
    assert audit["decision"] == "rejected" and audit["challenger_version"] == outcome.challenger_version
    # The labels it saw: the newest labeled_at, and when it read them (labels stored later are fresh to it).
    assert (audit["labels_until"], audit["labels_read_at"]) == (challenger_meta["labels_until"],
                                                                challenger_meta["labels_read_at"])
    assert audit["figures"]["golden_tolerance"] == -1.0 and audit["pruned_versions"] == [old]
    assert not [m for m in control_messages(settings) if m["action"] == "promote"]
    assert (settings.state_dir / "retrain" / "audit.jsonl").read_text().count("\n") == 1


def test_a_retrain_stopped_while_it_trains_registers_nothing_and_counts_as_no_attempt(rsettings,
                                                                                        model_registry) -> None:
    index_fresh_labels(rsettings)
    versions = [v["version"] for v in model_registry.list()]
    asked: list[int] = []

    def stopping() -> bool:  # a scheduler told to stop after the training's second step
        asked.append(1)
        return len(asked) > 4  # asked before every label is read, before the training loads, then at each step

    with Context.open(rsettings) as ctx:
        stopped = run_retrain(ctx, trigger="cron", should_stop=stopping)
        assert [v["version"] for v in model_registry.list()] == versions
        again = run_retrain(ctx, trigger="cron")  # a cron run after an attempt would wait for newer labels
    assert stopped.decision == "stopped" and stopped.reasons == ["training stopped at step 2 of 3"]
    assert again.decision in ("promoted", "rejected"), again.reasons
    assert [a["decision"] for a in audit_records(rsettings)] == ["stopped", again.decision]


def test_promotion_publishes_control_message(rsettings, model_registry) -> None:
    from model.onnx_runtime import CACHE_DIR, INT8_FILE

    champion = model_registry.champion()
    index_fresh_labels(rsettings, stored_ago=timedelta(minutes=2))  # not fresh again to the promoted model
    # Workers that score in onnx-int8 find the promoted model's export built.
    settings = rsettings.model_copy(update={"retrain_golden_tolerance": 1.0, "retrain_min_fresh_gain": -1.0,
                                            "retrain_max_p": 1.0,
                                            "model_quantize": "onnx-int8"})
    with Context.open(settings) as ctx:
        outcome = run_retrain(ctx, trigger="manual")
        # Nothing new since: a second attempt (not manual) is gated.
        again = run_retrain(ctx, trigger="cron")
    assert outcome.decision == "promoted", outcome.reasons
    assert again.decision == "skipped"
    assert model_registry.champion() == outcome.challenger_version != champion
    assert model_registry.get(outcome.challenger_version)["parent_version"] == champion
    assert (model_registry.path(outcome.challenger_version) / CACHE_DIR / INT8_FILE).is_file()
    (promote,) = [m for m in control_messages(settings) if m["action"] == "promote"]
    assert promote["model_version"] == outcome.challenger_version
    assert Path(promote["model_path"]) == model_registry.path(outcome.challenger_version)
    assert promote["details"]["previous_version"] == champion
    moved = model_registry.pointer()  # the number of the move, for workers that get the messages out of order
    assert (promote["sequence"], promote["registry_id"]) == (moved.sequence, moved.registry_id) and moved.sequence == 2
    assert [a["decision"] for a in audit_records(settings)] == ["promoted", "skipped"]

    # The next retrain trains on every label the first one saw, those it held back to judge included: their
    # judging is done. Only the new labels are held back now.
    index_fresh_labels(settings, n=21, seed=3, first=30)  # FINSENT_RETRAIN_MIN_LABELS is 20 here
    with Context.open(settings) as ctx:
        second = run_retrain(ctx, trigger="manual")
    assert second.decision == "promoted", second.reasons
    assert model_registry.get(second.challenger_version)["training"]["earlier_labels"] == 30
    assert model_registry.get(second.challenger_version)["training"]["eval_max_length"] == settings.max_length
    last = audit_records(settings)[-1]
    assert (last["fresh_labels"], last["earlier_labels"]) == (21, 30)
    assert last["fresh_train"] + last["fresh_heldout"] == 21


def test_scheduler_restart_keeps_its_schedule(rsettings) -> None:
    settings = rsettings.model_copy(update={"drift_check_minutes": 60.0, "retrain_cron": "0 3 * * 0"})
    first = RetrainScheduler(settings).start()
    try:
        jobs = first.jobs()
    finally:
        first.shutdown()
    assert set(jobs) == {"drift-check", "retrain-cron", "index-retention"}
    time.sleep(1.1)  # a re-created job would get a later next run time
    second = RetrainScheduler(settings).start()
    try:
        assert second.sync_jobs() == []  # nothing changed: the stored jobs are kept as they were
        assert second.jobs()[CHECK_JOB]["next_run_time"] == jobs[CHECK_JOB]["next_run_time"]
        assert second.jobs()["retrain-cron"]["next_run_time"] == jobs["retrain-cron"]["next_run_time"]
        assert second.jobs()["index-retention"]["next_run_time"] == jobs["index-retention"]["next_run_time"]
    finally:
        second.shutdown()
    changed = RetrainScheduler(settings.model_copy(update={"drift_check_minutes": 30.0, "retrain_cron": ""})).start()
    try:
        assert set(changed.jobs()) == {CHECK_JOB, "index-retention"}
        assert "0:30:00" in changed.jobs()[CHECK_JOB]["trigger"]
    finally:
        changed.shutdown()


def test_promotion_reaches_a_running_worker(rsettings, model_registry, tmp_path) -> None:
    from tests.integration.stream_harness import Worker, es_docs, make_doc, produce, wait_for

    settings = rsettings
    champion = model_registry.champion()
    worker = Worker(settings, model_registry.root, tmp_path / "worker-state", tmp_path / "worker.log")
    try:
        worker.start().wait_ready(timeout=180)
        before = [make_doc(i, tag="before") for i in range(8)]
        produce(settings, before)
        ids_before = {d.id for d in before}
        wait_for(lambda: ids_before <= {d["_id"] for d in es_docs(settings)}, 120, "documents before the retrain")

        index_fresh_labels(settings)
        lenient = settings.model_copy(update={"retrain_golden_tolerance": 1.0, "retrain_min_fresh_gain": -1.0,
                                              "retrain_max_p": 1.0})
        with Context.open(lenient) as ctx:
            outcome = run_retrain(ctx, trigger="manual")
        assert outcome.decision == "promoted", outcome.reasons
        new = outcome.challenger_version
        # The worker loads the model in the background and swaps it in before its next batch.
        try:
            wait_for(lambda: f"model {new} loaded" in worker.log.read_text(errors="replace"), 180,
                     f"the worker to load {new}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker.tail(30)}") from None

        after = [make_doc(i, tag="after") for i in range(8)]
        produce(settings, after)
        ids_after = {d.id for d in after}
        wait_for(lambda: ids_after <= {d["_id"] for d in es_docs(settings)}, 120, "documents after the promotion")
        assert worker.health()[1]["model_version"] == new
        by_id = {d["_id"]: d for d in es_docs(settings)}
        assert {by_id[i]["model_version"] for i in ids_before} == {champion}
        assert {by_id[i]["model_version"] for i in ids_after} == {new}
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()


def test_cli_check_golden_and_gated_run(rsettings) -> None:
    import json

    from typer.testing import CliRunner

    from finsent.cli import app

    s = rsettings
    env = {"FINSENT_TOPIC_PREFIX": s.topic_prefix, "FINSENT_INDEX_PREFIX": s.index_prefix,
           "FINSENT_MODEL_DIR": str(s.model_dir), "FINSENT_STATE_DIR": str(s.state_dir),
           "FINSENT_RETRAIN_DATA": str(SHARED_DATA), "FINSENT_GOLDEN_SIZE": "30", "FINSENT_RETRAIN_MIN_LABELS": "20",
           "FINSENT_DRIFT_REFERENCE_SIZE": "60", "FINSENT_DRIFT_WINDOW_SIZE": "40", "FINSENT_DEVICE": "cpu"}
    runner = CliRunner()
    check = runner.invoke(app, ["retrain", "check", "--json"], env=env)
    assert check.exit_code == 0, check.output
    report = json.loads(check.output.strip().splitlines()[-1])
    assert report["drift_detected"] is False and len(report["monitors"]) == 4
    assert "need 100" in report["monitors"][0]["details"]["reason"]

    built = runner.invoke(app, ["retrain", "golden"], env=env)
    assert built.exit_code == 0 and "built golden set" in built.output, built.output
    # Only rows the first model held out (its recorded fingerprints), at most FINSENT_GOLDEN_SIZE of them.
    held_out = first_model_held_out(Registry(s.model_dir))
    golden_rows = load_file(s.state_dir / "retrain" / "golden.csv").examples
    assert 0 < len(golden_rows) <= 30 and f"{len(golden_rows)} rows" in built.output
    assert {text_fingerprint(row.text) for row in golden_rows} <= held_out
    golden = (s.state_dir / "retrain" / "golden.csv").read_bytes()
    kept = runner.invoke(app, ["retrain", "golden"], env=env | {"FINSENT_GOLDEN_SIZE": "50"})
    assert "kept golden set" in kept.output
    assert (s.state_dir / "retrain" / "golden.csv").read_bytes() == golden  # never rebuilt

    gated = runner.invoke(app, ["retrain", "run"], env=env)
    assert gated.exit_code == 0 and "skipped: 0 fresh labels, need 20" in gated.output
    missing = runner.invoke(app, ["retrain", "golden"], env=env | {"FINSENT_RETRAIN_DATA": "/nonexistent",
                                                                   "FINSENT_GOLDEN_SET": str(s.state_dir / "g2.csv")})
    assert missing.exit_code == 1 and "/nonexistent does not exist" in missing.output
