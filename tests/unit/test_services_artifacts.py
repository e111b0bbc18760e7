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


def test_a_half_written_archive_from_an_interrupted_run_is_fetched_again(tmp_path, monkeypatch):
    import os
    import stat
    import zipfile

    from finsent.services.artifacts import elasticsearch_home

    version = "9.9.9"
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr(f"elasticsearch-{version}/bin/elasticsearch", "#!/bin/sh\n")
    # A stand-in for Maven's dependency:copy, which keeps a destination file that is already there.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(f"""#!/bin/sh
for arg in "$@"; do case "$arg" in -DoutputDirectory=*) out="${{arg#-DoutputDirectory=}}";; esac; done
[ -e "$out/elasticsearch-{version}.zip" ] || cp "{good}" "$out/elasticsearch-{version}.zip"
""")
    mvn.chmod(mvn.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "cache"
    (cache / "downloads").mkdir(parents=True)
    (cache / "downloads" / f"elasticsearch-{version}.zip").write_bytes(b"PK\x03\x04 cut short")

    home = elasticsearch_home(cache, version)
    assert (home / "bin" / "elasticsearch").exists() and (home / ".complete").exists()
