"""`finsent services up` says it will download only when the cache lacks the server's version."""

import pytest

from finsent.services.elasticsearch_server import ElasticsearchServer
from finsent.services.kafka_server import KafkaServer
from finsent.settings import load_settings


@pytest.mark.parametrize(("server_class", "folder"), [
    (KafkaServer, "kafka-{settings.kafka_version}"),
    (ElasticsearchServer, "elasticsearch-{settings.elasticsearch_version}"),
])
def test_fetched_means_a_complete_folder_of_this_version(server_class, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("FINSENT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings()
    server = server_class(settings)
    assert not server.fetched()

    unpacked = settings.cache_dir / folder.format(settings=settings)
    unpacked.mkdir(parents=True)
    assert not server.fetched()  # a fetch that stopped half-way has no marker
    (unpacked / ".complete").touch()
    assert server.fetched()
