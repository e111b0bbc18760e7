"""`finsent dashboards import` against a fake Kibana: a real HTTP server on 127.0.0.1 that
parses the multipart upload like Kibana does and answers with Kibana's response shapes."""

from __future__ import annotations

import base64
import json
import threading
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from dashboards.kibana_import import KibanaError, KibanaTarget, import_ndjson
from dashboards.kibana_objects import build_objects, to_ndjson


class FakeKibana:
    """Stores imported objects by (type, id); ``script`` queues canned (status, body) answers."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict] = {}
        self.requests: list[dict] = []
        self.script: list[tuple[int, object]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = fake.handle(self.path, dict(self.headers), body)
                data = json.dumps(answer).encode() if not isinstance(answer, bytes) else answer
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def handle(self, path: str, headers: dict, body: bytes):
        parts = urlsplit(path)
        message = BytesParser(policy=email_policy).parsebytes(
            b"Content-Type: " + headers.get("Content-Type", "").encode() + b"\r\n\r\n" + body)
        files = {}
        if message.is_multipart():
            for part in message.iter_parts():
                files[part.get_param("name", header="content-disposition")] = (
                    part.get_filename(), part.get_payload(decode=True))
        self.requests.append({"path": parts.path, "query": parse_qs(parts.query), "headers": headers, "files": files})
        if self.script:
            return self.script.pop(0)
        if headers.get("kbn-xsrf") is None:
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "Request must contain a kbn-xsrf header."}
        if "file" not in files:
            return 400, {"statusCode": 400, "error": "Bad Request", "message": "[request body.file]: expected value"}
        overwrite = parse_qs(parts.query).get("overwrite") == ["true"]
        objects = [json.loads(line) for line in files["file"][1].decode().splitlines() if line.strip()]
        errors, imported = [], 0
        for obj in objects:
            key = (obj["type"], obj["id"])
            if key in self.objects and not overwrite:
                errors.append({"id": obj["id"], "type": obj["type"], "error": {"type": "conflict"}})
                continue
            self.objects[key] = obj
            imported += 1
        return 200, {"success": not errors, "successCount": imported, "errors": errors, "warnings": []}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


NDJSON = to_ndjson(build_objects())
COUNT = len(build_objects())


@pytest.fixture
def kibana():
    with FakeKibana() as fake:
        yield fake


def test_import_sends_the_multipart_file_with_overwrite_and_xsrf(kibana):
    result = import_ndjson(NDJSON, KibanaTarget(kibana.url, username="elastic", password="s3cret"))
    assert result.success_count == COUNT
    [request] = kibana.requests
    assert request["path"] == "/api/saved_objects/_import"
    assert request["query"]["overwrite"] == ["true"]
    assert request["headers"]["kbn-xsrf"]
    assert request["headers"]["Content-Type"].startswith("multipart/form-data")
    filename, content = request["files"]["file"]
    assert filename.endswith(".ndjson") and content.decode() == NDJSON
    assert request["headers"]["Authorization"] == "Basic " + base64.b64encode(b"elastic:s3cret").decode()


def test_import_is_idempotent(kibana):
    target = KibanaTarget(kibana.url)
    first = import_ndjson(NDJSON, target)
    second = import_ndjson(NDJSON, target)
    assert first.success_count == second.success_count == COUNT
    assert len(kibana.objects) == COUNT


def test_api_key_and_space(kibana):
    import_ndjson(NDJSON, KibanaTarget(kibana.url + "/", api_key="aWQ6a2V5", username="ignored", space="markets"))
    [request] = kibana.requests
    assert request["path"] == "/s/markets/api/saved_objects/_import"
    assert request["headers"]["Authorization"] == "ApiKey aWQ6a2V5"


def test_per_object_errors_are_reported_with_their_objects(kibana):
    kibana.script.append((200, {"success": False, "successCount": 20, "errors": [{
        "id": "finsent-sentiment-by-ticker", "type": "lens", "meta": {"title": "Sentiment over time per ticker"},
        "error": {"type": "missing_references", "references": [{"type": "index-pattern", "id": "finsent-dv-docs"}]}}]}))
    with pytest.raises(KibanaError) as info:
        import_ndjson(NDJSON, KibanaTarget(kibana.url))
    message = str(info.value)
    assert "1 object(s) failed" in message and "20 imported" in message
    assert "lens 'finsent-sentiment-by-ticker' (Sentiment over time per ticker): missing_references" in message
    assert "index-pattern 'finsent-dv-docs'" in message


@pytest.mark.parametrize("status, body, expected", [
    (401, {"statusCode": 401, "error": "Unauthorized", "message": "[security_exception] unable to authenticate"},
     "refused the credentials (HTTP 401): [security_exception] unable to authenticate"),
    (400, {"statusCode": 400, "error": "Bad Request", "message": "Unsupported file extension"},
     "rejected the import (HTTP 400): Unsupported file extension"),
    (404, {"statusCode": 404, "error": "Not Found", "message": "Not Found"}, "does the space exist?"),
    (200, b"<html>not kibana</html>", "not JSON"),
])
def test_http_errors_become_clear_messages(kibana, status, body, expected):
    kibana.script.append((status, body))
    with pytest.raises(KibanaError) as info:
        import_ndjson(NDJSON, KibanaTarget(kibana.url))
    assert expected in str(info.value)


def test_retries_while_kibana_starts(kibana):
    kibana.script += [(503, {"statusCode": 503, "message": "Kibana server is not ready yet"})] * 2
    slept = []
    result = import_ndjson(NDJSON, KibanaTarget(kibana.url), wait=60, sleep=slept.append)
    assert result.success_count == COUNT
    assert slept == [1.0, 2.0] and len(kibana.requests) == 3


def test_gives_up_after_the_wait_with_the_last_problem():
    with FakeKibana() as fake:
        url = fake.url
    now = [0.0]

    def sleep(seconds):
        now[0] += seconds
    with pytest.raises(KibanaError, match=f"cannot reach Kibana at {url}"):
        import_ndjson(NDJSON, KibanaTarget(url), wait=5, sleep=sleep, clock=lambda: now[0])
    assert now[0] <= 5


def test_cli_import_against_the_fake(kibana, monkeypatch, tmp_path):
    from finsent.cli import app

    monkeypatch.setenv("FINSENT_KIBANA_PASSWORD", "from-env")
    monkeypatch.setenv("FINSENT_INDEX_PREFIX", "acme")
    runner = CliRunner()
    result = runner.invoke(app, ["dashboards", "import", "--kibana", kibana.url, "--username", "ops"])
    assert result.exit_code == 0, result.output
    assert f"imported {COUNT} saved objects" in result.output
    views = {o["attributes"]["title"] for o in kibana.objects.values() if o["type"] == "index-pattern"}
    assert "acme-docs" in views
    assert kibana.requests[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"ops:from-env").decode()

    kibana.script.append((401, {"statusCode": 401, "message": "unable to authenticate"}))
    failed = runner.invoke(app, ["dashboards", "import", "--kibana", kibana.url])
    assert failed.exit_code == 1 and "import failed: Kibana refused the credentials" in failed.output

    bad = tmp_path / "bad.ndjson"
    bad.write_text("{broken\n")
    refused = runner.invoke(app, ["dashboards", "import", "--kibana", kibana.url, "--file", str(bad)])
    assert refused.exit_code == 1 and "bad.ndjson:1: not JSON" in refused.output


def test_a_password_in_the_kibana_url_is_used_but_never_shown(kibana):
    from finsent.cli import app

    with FakeKibana() as gone:
        closed = gone.url.replace("http://", "http://ops:hunter2@")
    result = CliRunner().invoke(app, ["dashboards", "import", "--kibana", closed])
    assert result.exit_code == 1 and "cannot reach Kibana at http://***@127.0.0.1:" in result.output
    kibana.script.append((404, {"statusCode": 404, "message": "Not Found"}))
    with pytest.raises(KibanaError) as info:
        import_ndjson(NDJSON, KibanaTarget(kibana.url.replace("http://", "http://ops:hunter2@"), space="nope"))
    message = str(info.value)
    assert "http://***@127.0.0.1" in message and "/s/nope/api/saved_objects/_import not found" in message
    imported = CliRunner().invoke(app, ["dashboards", "import", "--kibana",
                                        kibana.url.replace("http://", "http://ops:hunter2@")])
    assert imported.exit_code == 0 and "into http://***@127.0.0.1" in imported.output, imported.output
    assert kibana.requests[-1]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"ops:hunter2").decode()
    for output in (result.output, message, imported.output):
        assert "hunter2" not in output and "ops:" not in output


def test_a_kibana_url_typed_without_a_scheme_is_refused_without_its_password():
    from finsent.cli import app

    result = CliRunner().invoke(app, ["dashboards", "import", "--kibana", "ops:hunter2@kibana.example:5601"])
    assert result.exit_code == 1 and "'***@kibana.example:5601' is not an http(s) URL" in result.output
    assert "hunter2" not in result.output and "ops:" not in result.output
