"""topology.ensure_indices against a stand-in client: every index at once, the same answers as one by one."""

from __future__ import annotations

import threading

import pytest

from finsent import topology
from finsent.settings import Settings


class _Indices:
    """``es.indices`` of a cluster that holds ``existing``; ``create`` waits at ``barrier`` when given."""

    def __init__(self, existing: set[str], barrier: threading.Barrier | None = None,
                 refuse: str | None = None) -> None:
        self.existing, self.barrier, self.refuse = set(existing), barrier, refuse
        self.templates: list[str] = []
        self.mapped: list[str] = []
        self._lock = threading.Lock()

    def put_index_template(self, *, name: str, **body) -> None:
        with self._lock:
            self.templates.append(name)

    def exists(self, *, index: str) -> bool:
        return index in self.existing

    def put_mapping(self, *, index: str, properties: dict) -> None:
        with self._lock:
            self.mapped.append(index)

    def create(self, *, index: str) -> None:
        if self.barrier is not None:
            self.barrier.wait()  # passes only once every index's create is on its way
        if index == self.refuse:
            raise RuntimeError(f"validation_exception: this action would add [2] shards ({index})")
        with self._lock:
            self.existing.add(index)


class _Client:
    def __init__(self, indices: _Indices) -> None:
        self.indices = indices


def test_the_indices_are_made_at_once_not_one_after_the_other():
    settings = Settings(index_prefix="t1")
    # Created one by one, the first create would wait here for the others until the timeout breaks the barrier.
    indices = _Indices(set(), barrier=threading.Barrier(len(topology.INDICES), timeout=30))
    created = topology.ensure_indices(_Client(indices), settings)
    assert created == [settings.index(name) for name in topology.INDICES]
    assert sorted(indices.templates) == sorted(settings.index(name) for name in topology.INDICES)


def test_existing_indices_get_their_new_fields_and_are_not_reported_as_created():
    settings = Settings(index_prefix="t2")
    there = {settings.index("docs"), settings.index("labels")}
    indices = _Indices(there)
    created = topology.ensure_indices(_Client(indices), settings)
    assert created == [settings.index(name) for name in topology.INDICES if settings.index(name) not in there]
    assert sorted(indices.mapped) == sorted(there)


def test_an_index_the_cluster_refuses_is_an_error():
    settings = Settings(index_prefix="t3")
    indices = _Indices(set(), refuse=settings.index("alerts"))
    with pytest.raises(RuntimeError, match="shards"):
        topology.ensure_indices(_Client(indices), settings)
    assert settings.index("alerts") not in indices.existing
