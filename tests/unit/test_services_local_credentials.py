"""The local Elasticsearch's password: kept per port, private, and used by clients given no credentials of their own
for a loopback URL only."""

from __future__ import annotations

import stat
from pathlib import Path

import bcrypt
import pytest
from pydantic import SecretStr

from finsent import clients
from finsent.services import local_credentials
from finsent.services.process import ServiceError
from finsent.settings import Settings


def test_a_port_keeps_its_password_private_and_for_good(tmp_path: Path):
    first = local_credentials.ensure_password(tmp_path, 9200)
    path = local_credentials.password_path(tmp_path, 9200)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert local_credentials.ensure_password(tmp_path, 9200) == first
    assert local_credentials.read_password(tmp_path, 9200) == first
    assert len(first) >= 32
    assert local_credentials.ensure_password(tmp_path, 9201) != first  # another server, another password
    assert sorted(p.name for p in path.parent.iterdir()) == ["elasticsearch-9200", "elasticsearch-9201"]  # no leftovers


def test_no_password_where_no_server_was_started(tmp_path: Path):
    assert local_credentials.read_password(tmp_path, 9200) is None


def test_a_kept_password_that_cannot_be_read_stops_the_start_instead_of_making_one_no_client_knows(tmp_path: Path):
    path = local_credentials.password_path(tmp_path, 9200)
    path.parent.mkdir(parents=True)
    path.write_text("")  # emptied (or another user's): a new password went to the node, and clients read none
    with pytest.raises(ServiceError, match="holds no password this user can read"):
        local_credentials.ensure_password(tmp_path, 9200)
    assert path.read_text() == ""  # left for the user to look at


def test_the_realm_files_hold_the_user_with_the_password_hashed(tmp_path: Path):
    files = local_credentials.realm_files("s3cret-password")
    user, digest = files["users"].strip().split(":", 1)
    assert user == local_credentials.USER
    assert digest.startswith("$2a$10$")  # the bcrypt form Elasticsearch's file realm reads
    assert "s3cret-password" not in files["users"]
    assert bcrypt.checkpw(b"s3cret-password", digest.encode())
    assert not bcrypt.checkpw(b"another", digest.encode())
    assert files["users_roles"] == f"superuser:{local_credentials.USER}\n"


@pytest.mark.parametrize(("url", "loopback"), [
    ("http://127.0.0.1:9200", True), ("http://localhost:9200", True), ("http://[::1]:9200", True),
    ("http://127.0.0.2:41234", True), ("https://127.0.0.1:9200", False), ("http://es.internal:9200", False),
    ("http://10.0.0.5:9200", False), ("http://elasticsearch:9200", False),
])
def test_only_plain_http_to_this_machine_counts_as_the_local_server(url, loopback):
    assert local_credentials.is_loopback_http(url) is loopback


def _kwargs(tmp_path: Path, **fields) -> dict:
    return clients.elasticsearch_kwargs(Settings(cache_dir=tmp_path, **fields))


def test_a_client_given_no_credentials_uses_the_local_server_s(tmp_path: Path):
    assert "basic_auth" not in _kwargs(tmp_path)  # no server started: nothing to send
    password = local_credentials.ensure_password(tmp_path, 9200)
    assert _kwargs(tmp_path)["basic_auth"] == (local_credentials.USER, password)
    # a relay on another loopback port (the tests' outages) still reaches the server of FINSENT_ELASTICSEARCH_PORT
    assert _kwargs(tmp_path, elasticsearch_url="http://127.0.0.1:41234")["basic_auth"][1] == password
    other = local_credentials.ensure_password(tmp_path, 9400)
    assert _kwargs(tmp_path, elasticsearch_port=9400)["basic_auth"][1] == other


def test_a_client_s_own_credentials_and_remote_clusters_are_left_alone(tmp_path: Path):
    local_credentials.ensure_password(tmp_path, 9200)
    own = _kwargs(tmp_path, elasticsearch_username="elastic", elasticsearch_password=SecretStr("theirs"))
    assert own["basic_auth"] == ("elastic", "theirs")
    keyed = _kwargs(tmp_path, elasticsearch_api_key=SecretStr("a2V5"))
    assert keyed["api_key"] == "a2V5" and "basic_auth" not in keyed
    remote = _kwargs(tmp_path, elasticsearch_url="http://es.internal:9200")
    assert "basic_auth" not in remote  # the local password never leaves this machine
