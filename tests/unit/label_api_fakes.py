"""A stand-in for the labels API's Kafka publisher and Elasticsearch client, for tests of the HTTP app."""

from __future__ import annotations

from retrain import labels_http


class Publisher:
    def __init__(self) -> None:
        self.published: list = []

    def publish(self, records) -> list[str]:
        self.published += records
        return [f"id-{n}" for n in range(len(records))]

    def close(self) -> None:
        pass


def use_fake_publisher(monkeypatch) -> Publisher:
    """The app built from now on publishes into the returned fake and reaches no Elasticsearch."""
    from finsent import clients

    fake = Publisher()
    monkeypatch.setattr(labels_http.LabelPublisher, "start", lambda self: fake)
    monkeypatch.setattr(clients, "elasticsearch", lambda settings: type("ES", (), {"close": lambda self: None})())
    return fake
