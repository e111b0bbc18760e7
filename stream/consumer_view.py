"""What the Kafka client itself holds for each partition, for the stall report.

Faust keeps its own view (read and committed offsets, its paused set); aiokafka keeps another
(paused, fetch position, pending offset reset). A partition that is never fetched again after a
seek (RELIABILITY.md, "Open findings") shows "read = committed" in Faust's view; this one says
whether the client had it paused or had lost its position. Private aiokafka state: read only,
and any change of its shape gives an ``error`` entry instead of breaking the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def client_partition_states(consumer: Any, tps: Iterable[Any]) -> dict[str, Any]:
    """``{str(tp): {"paused", "position", "awaiting_reset"}}`` from aiokafka's subscription state."""
    try:
        assignment = consumer._thread._ensure_consumer()._subscription.subscription.assignment  # Faust → aiokafka
    except Exception as exc:  # noqa: BLE001 - diagnostics only; no assignment or another client layout
        return {"error": f"{type(exc).__name__}: {exc}"}
    states: dict[str, Any] = {}
    for tp in tps:
        try:
            state = assignment.state_value(tp)
            states[str(tp)] = {"paused": state.paused,
                               "position": state.position if state.has_valid_position else None,
                               "awaiting_reset": state.awaiting_reset}
        except Exception as exc:  # noqa: BLE001 - e.g. the partition left the assignment meanwhile
            states[str(tp)] = {"error": f"{type(exc).__name__}: {exc}"}
    return states
