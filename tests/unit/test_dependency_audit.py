"""The dependency audit: pin parsing, the verdict per pin, and the CLI against a fake PyPI JSON API
(a real HTTP server on 127.0.0.1 that answers like the registry this project is built against:
per-release records for some projects, only the latest-release record for others)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import typer
from typer.testing import CliRunner

from finsent.dependency_audit import Pin, audit, judge, main, parse_pins

ADVISORY = {"id": "PYSEC-2026-1", "aliases": ["CVE-2026-0001"], "fixed_in": ["1.0.1"],
            "summary": "remote code execution", "link": "https://osv.dev/PYSEC-2026-1", "withdrawn": None}
WITHDRAWN = {"id": "GHSA-xxxx", "aliases": [], "fixed_in": [], "summary": "not a bug", "withdrawn": "2026-01-01T00:00:00Z"}


def project(version: str, vulnerabilities: list[dict]) -> dict:
    return {"info": {"name": "x", "version": version}, "vulnerabilities": vulnerabilities}


def test_parse_pins_reads_names_versions_and_lines():
    text = "# header\nRequests==2.34.2\n\nnvidia-nvtx==13.2.86 ; platform_system == 'Linux'  # torch\n"
    assert parse_pins(text) == [Pin("requests", "2.34.2", 2), Pin("nvidia-nvtx", "13.2.86", 4)]


@pytest.mark.parametrize("line", ["numpy>=2", "numpy", "not a requirement!!"])
def test_parse_pins_names_the_line_that_is_not_a_pin(line):
    with pytest.raises(ValueError, match=r"constraints\.txt:2"):
        parse_pins(f"a==1\n{line}\n", "constraints.txt")


def test_release_record_decides_and_withdrawn_advisories_do_not_count():
    pin = Pin("a", "1.0", 1)
    finding = judge(pin, project("1.0", [ADVISORY, WITHDRAWN]), None)
    assert finding.status == "vulnerable" and finding.source == "release"
    assert [a["id"] for a in finding.advisories] == ["PYSEC-2026-1"]
    assert judge(pin, project("1.0", [WITHDRAWN]), None).status == "clean"


def test_project_record_answers_only_for_the_latest_release():
    assert judge(Pin("b", "2.0", 1), None, project("2.0.0", [ADVISORY])).status == "vulnerable"
    behind = judge(Pin("b", "1.9", 1), None, project("2.0", []))
    assert behind.status == "unaudited" and "latest release is 2.0" in behind.reason
    assert judge(Pin("c", "1", 1), None, None).reason == "the index has no record of this project"


class FakePyPI:
    """``releases``: path → record served at /pypi/NAME/VERSION/json; ``projects``: at /pypi/NAME/json.
    ``fail_first`` paths answer 503 once (a transient failure the audit must retry)."""

    def __init__(self, releases: dict, projects: dict, fail_first: set[str] = frozenset()) -> None:
        self.hits: list[str] = []
        fake, pending = self, set(fail_first)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.hits.append(self.path)
                parts = self.path.strip("/").split("/")  # pypi, name, [version,] json
                record = (releases.get(tuple(parts[1:3])) if len(parts) == 4 else projects.get(parts[1]))
                status = 503 if self.path in pending else (200 if record is not None else 404)
                pending.discard(self.path)
                body = json.dumps(record if status == 200 else {"message": "Not Found"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.index = f"http://127.0.0.1:{self.server.server_address[1]}/pypi"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def run_cli(tmp_path, pins: str, *args: str):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(pins)
    app = typer.Typer()
    app.command()(main)
    return CliRunner().invoke(app, [str(constraints), *args])


def test_audit_retries_a_transient_failure_and_falls_back_to_the_project_record():
    with FakePyPI({("a", "1.0"): project("1.0", [])}, {"b": project("2.0", [])},
                  fail_first={"/pypi/a/1.0/json"}) as pypi:
        findings = audit([Pin("a", "1.0", 1), Pin("b", "2.0", 2)], index=pypi.index)
    assert [(f.name, f.status, f.source) for f in findings] == [
        ("a", "clean", "release"), ("b", "clean", "project (latest release)")]
    assert pypi.hits.count("/pypi/a/1.0/json") == 2 and "/pypi/b/2.0/json" in pypi.hits


def test_cli_fails_on_an_advisory_and_names_it(tmp_path):
    with FakePyPI({("a", "1.0"): project("1.0", [ADVISORY])}, {"b": project("2.0", [])}) as pypi:
        result = run_cli(tmp_path, "a==1.0\nb==2.0\n", "--index", pypi.index)
    assert result.exit_code == 1
    assert "VULNERABLE a==1.0: PYSEC-2026-1 (1.0.1) remote code execution" in result.output
    assert "2 pins, 2 audited, 1 vulnerable, 0 not audited" in result.output


def test_cli_warns_on_unaudited_pins_and_fails_on_them_only_when_strict(tmp_path):
    with FakePyPI({}, {"b": project("2.1", [])}) as pypi:
        lenient = run_cli(tmp_path, "b==2.0\n", "--index", pypi.index)
        strict = run_cli(tmp_path, "b==2.0\n", "--index", pypi.index, "--strict")
        as_json = run_cli(tmp_path, "b==2.0\n", "--index", pypi.index, "--json")
    assert lenient.exit_code == 0 and "not audited b==2.0" in lenient.output
    assert strict.exit_code == 1
    assert json.loads(as_json.output)[0]["status"] == "unaudited"


def test_cli_reports_a_bad_constraints_line_and_an_unreachable_index(tmp_path):
    bad = run_cli(tmp_path, "a>=1\n")
    assert bad.exit_code == 2 and "constraints.txt:1" in bad.output
    down = run_cli(tmp_path, "a==1\n", "--index", "http://127.0.0.1:9/pypi")
    assert down.exit_code == 2 and "cannot read the index" in down.output
