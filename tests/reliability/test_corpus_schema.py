"""The bad-input corpus against the pure paths: ``parse_record`` for every record type, the
worker's ``parse_raw``, and ingest's inbound validation + normaliser.

Each case ends as the record or as the one clear error type of its path (RecordError,
Rejected) with a reason, never as another exception, which in a consumer would be a crash
or a poison record. What ingest produces is always a record the worker accepts.
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from finsent.schemas import (
    Aggregate,
    Alert,
    ControlMessage,
    DeadLetter,
    LabelRecord,
    RawDocument,
    RecordError,
    ScoredDocument,
    parse_record,
)
from ingest.inbound import to_item
from ingest.items import Rejected
from ingest.normalise import Normaliser
from ingest.tickers import TickerDictionary, TickerExtractor
from stream.validation import parse_raw
from tests.reliability.bad_input import (
    case_bytes,
    corpus_settings,
    json_values,
    load_cases,
    push_documents,
    raw_records,
)
from tests.reliability.figures import record

MAX_TEXT_BYTES = 100_000  # the worker's default FINSENT_MAX_TEXT_BYTES
MODELS = [RawDocument, ScoredDocument, LabelRecord, Aggregate, Alert, ControlMessage, DeadLetter]
OUTCOMES: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    record("corpus.schema", cases=sum(OUTCOMES.values()), outcomes=dict(OUTCOMES))


def outcome_of_raw(value: bytes) -> str:
    try:
        parse_raw(value, MAX_TEXT_BYTES)
    except RecordError as exc:
        assert exc.reason.strip(), value
        return "invalid"
    return "valid"


@pytest.mark.parametrize("case", load_cases("raw"), ids=lambda c: c["name"])
def test_hand_written_raw_records(case):
    got = outcome_of_raw(case_bytes(case))
    OUTCOMES[f"raw-hand:{got}"] += 1
    assert got == ("valid" if case["expect"] == "indexed" else "invalid")


@corpus_settings(400)
@given(raw_records())
def test_generated_raw_records_are_documents_or_clear_errors(value):
    OUTCOMES[f"raw-generated:{outcome_of_raw(value)}"] += 1


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_record_type_refuses_arbitrary_input_clearly(model):
    @corpus_settings(100)
    @given(st.one_of(json_values.map(orjson.dumps), st.binary(max_size=100),
                     st.dictionaries(st.sampled_from(list(model.model_fields)), json_values, max_size=8)))
    def check(data):
        try:
            parse_record(model, data)
        except RecordError as exc:
            assert exc.reason
            OUTCOMES[f"{model.__name__}:invalid"] += 1
        else:
            OUTCOMES[f"{model.__name__}:valid"] += 1

    check()


_NORMALISER = Normaliser(TickerExtractor(TickerDictionary.load(None)))


@corpus_settings(400)
@given(push_documents)
def test_inbound_documents_are_rejected_with_a_reason_or_become_valid_raw_records(doc):
    try:
        raw = _NORMALISER.normalise(to_item(doc, default_source="push", where="document"))
    except Rejected as exc:
        assert exc.code and exc.detail
        OUTCOMES[f"inbound:rejected:{exc.code}"] += 1
        return
    # What ingest produces, the worker must accept: same record after the Kafka round trip.
    assert parse_raw(raw.to_json(), MAX_TEXT_BYTES) == raw
    OUTCOMES["inbound:accepted"] += 1
