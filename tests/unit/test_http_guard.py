"""Connections that never finish their headers, clients that never take their answer, and clients that open too many
(finsent.http_guard), against real servers on 127.0.0.1: the guard itself, the push endpoint and `finsent dashboards
serve`. Deadlines are short; a test only waits, generously, for a connection to be closed, or checks it still
answers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from finsent import http_guard
from finsent.http_guard import ClientConnections
from finsent.settings import load_settings
from tests.ports import free_port

GENEROUS = 15.0  # seconds a closing may take on a loaded machine
REQUEST = b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
ROOT = Path(__file__).resolve().parents[2]


def ok_app() -> web.Application:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ok", ok)
    return app


@contextlib.asynccontextmanager
async def serving(app: web.Application, serve=http_guard.serve, **settings):
    """``serve(app, host, port, settings, stop)`` running on a free port, stopped on the way out."""
    port, stop = free_port(), asyncio.Event()
    started = asyncio.Event()

    async def on_startup(_: web.Application) -> None:
        started.set()

    app.on_startup.append(on_startup)
    task = asyncio.create_task(serve(app, "127.0.0.1", port, load_settings(**settings), stop))
    await asyncio.wait_for(started.wait(), GENEROUS)
    for _ in range(500):  # the site listens a moment after the startup hooks ran
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.01)
    try:
        yield port
    finally:
        stop.set()
        await asyncio.wait_for(task, GENEROUS)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """Whether the server closes the connection within GENEROUS seconds (whatever it answers first)."""
    try:
        async with asyncio.timeout(GENEROUS):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def answer_on(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    writer.write(REQUEST)
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), GENEROUS)


async def stalled(port: int, path: str) -> socket.socket:
    """A raw connection with a small receive buffer that sent ``GET path`` and reads nothing (until told)."""
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window offered is small too
    conn.settimeout(GENEROUS)
    conn.connect(("127.0.0.1", port))
    conn.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return conn


def taken_until_closed(conn: socket.socket) -> tuple[int, str]:
    """What the client gets once it reads (in a thread: the server shares the test's loop), and how it ends."""
    taken = 0
    try:
        while chunk := conn.recv(65536):
            taken += len(chunk)
    except TimeoutError:
        return taken, "still open"
    except ConnectionError:
        return taken, "reset"
    return taken, "closed"


async def late_answers(registry: CollectorRegistry, expected: int) -> float | None:
    """The count of answers not taken once it is ``expected``, or what it is GENEROUS seconds later."""
    for _ in range(int(GENEROUS / 0.05)):
        if (count := registry.get_sample_value("finsent_http_late_answers_total", {"server": "push"})) == expected:
            break
        await asyncio.sleep(0.05)
    return count


def guarded(registry: CollectorRegistry):
    """http_guard.serve counting in ``registry`` (server="push")."""
    return functools.partial(http_guard.serve, metrics=http_guard.GuardMetrics(registry, "push"))


# --- the guard on its own ------------------------------------------------------------------------------------------

async def test_a_connection_that_never_finishes_its_headers_is_closed_and_others_are_answered() -> None:
    async with serving(ok_app(), http_header_timeout=0.3) as port:
        silent = await asyncio.open_connection("127.0.0.1", port)
        half = await asyncio.open_connection("127.0.0.1", port)
        half[1].write(b"GET /ok HT")
        assert await closed_by_server(half[0])
        assert await closed_by_server(silent[0])
        assert (await answer_on(*await asyncio.open_connection("127.0.0.1", port))).startswith(b"HTTP/1.1 200")


async def test_a_later_request_has_the_deadline_from_its_first_byte_not_from_the_previous_answer() -> None:
    async with serving(ok_app(), http_header_timeout=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await answer_on(reader, writer)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.0)  # idle for three deadlines: a keep-alive connection, not a late request
        assert (await answer_on(reader, writer)).startswith(b"HTTP/1.1 200")
        writer.write(REQUEST[:10])
        assert await closed_by_server(reader)


async def test_half_a_request_pipelined_behind_a_whole_one_is_held_no_longer_than_an_idle_connection(
        monkeypatch) -> None:
    # aiohttp's C parser keeps the half where Python cannot see it, so the header deadline cannot time it
    # (RELIABILITY.md, "Half a request pipelined behind a complete one"): the keep-alive timer closes it as it closes
    # an idle connection, and a further byte of it starts the header deadline. That finding relies on both bounds.
    monkeypatch.setattr(http_guard, "KEEPALIVE_TIMEOUT", 0.5)
    async with serving(ok_app(), http_header_timeout=60) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST + REQUEST[:10])  # one packet
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), GENEROUS)).startswith(b"HTTP/1.1 200")
        assert await closed_by_server(reader)
    monkeypatch.setattr(http_guard, "KEEPALIVE_TIMEOUT", 3600.0)
    async with serving(ok_app(), http_header_timeout=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST + REQUEST[:10])
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\nok"), GENEROUS)).startswith(b"HTTP/1.1 200")
        writer.write(REQUEST[10:12])
        assert await closed_by_server(reader)


async def test_a_client_over_its_connection_cap_is_closed_at_once_and_logged_once(caplog) -> None:
    caplog.set_level(logging.INFO, "finsent.http_guard")
    async with serving(ok_app(), http_header_timeout=60, http_max_connections_per_client=2) as port:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for _ in range(3):
            reader, _ = await asyncio.open_connection("127.0.0.1", port)
            assert await closed_by_server(reader)
        assert (await answer_on(*held[0])).startswith(b"HTTP/1.1 200")  # the admitted ones are served
        held[1][1].close()
        for _ in range(500):  # the server sees the close a moment later; until then a new one is refused
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                assert (await answer_on(reader, writer)).startswith(b"HTTP/1.1 200")
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("a connection closed by the client was never released")
    refusals = [r for r in caplog.records if "FINSENT_HTTP_MAX_CONNECTIONS_PER_CLIENT" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING
    assert refusals[0].getMessage().startswith("refused 1 connection(s) from 127.0.0.1: it held 2 open")


async def test_a_stop_waits_for_a_trickled_body_no_longer_than_the_guards_shutdown_timeout(monkeypatch) -> None:
    # aiohttp's runner waits 60 s for the requests under way: a sender trickling its body held a SIGTERM that long
    monkeypatch.setattr(http_guard, "SHUTDOWN_TIMEOUT", 0.3)

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app = ok_app()
    app.router.add_post("/echo", echo)
    async with serving(app) as port:
        idle = await asyncio.open_connection("127.0.0.1", port)
        assert (await answer_on(*idle)).startswith(b"HTTP/1.1 200")
        half = await asyncio.open_connection("127.0.0.1", port)
        half[1].write(b"GET /ok HT")
        trickle = await asyncio.open_connection("127.0.0.1", port)
        trickle[1].write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await asyncio.sleep(0.2)
    for reader, _ in (idle, half, trickle):
        assert await closed_by_server(reader)


def test_the_guards_stop_fits_in_docker_composes_grace_period() -> None:
    # aiohttp waits SHUTDOWN_TIMEOUT for the requests under way, then as long again for the cancelled ones to end
    import yaml

    grace = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-finsent"]["stop_grace_period"]
    assert grace.endswith("s") and 2 * http_guard.SHUTDOWN_TIMEOUT < int(grace[:-1]) / 2


def test_connections_are_counted_per_client_and_refusals_reported_once_a_minute_and_counted(caplog) -> None:
    now, registry = [0.0], CollectorRegistry()
    clients = ClientConnections(2, 10.0, 60.0, metrics=http_guard.GuardMetrics(registry, "push"), clock=lambda: now[0])
    caplog.set_level(logging.INFO, "finsent.http_guard")
    assert clients.admit("10.0.0.1") and clients.admit("10.0.0.1") and clients.admit("10.0.0.2")
    assert [clients.admit("10.0.0.1") for _ in range(4)] == [False] * 4
    now[0] = 61.0
    assert not clients.admit("10.0.0.1")
    clients.release("10.0.0.1")
    assert clients.admit("10.0.0.1") and clients.open == {"10.0.0.1": 2, "10.0.0.2": 1}
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "refused 1 connection(s) from 10.0.0.1", "refused 4 connection(s) from 10.0.0.1"]
    clients.headers_late("10.0.0.2")
    clients.malformed("10.0.0.2")
    assert clients.refused == 5
    assert {name: registry.get_sample_value(f"finsent_http_{name}_total", {"server": "push"})
            for name in ("connections_refused", "late_headers", "malformed_requests")} == {
        "connections_refused": 5, "late_headers": 1, "malformed_requests": 1}
    clients.answer_late("10.0.0.2")
    assert registry.get_sample_value("finsent_http_late_answers_total", {"server": "push"}) == 1
    assert "did not take their answer within 60 s" in caplog.records[-1].getMessage()
    unlimited = ClientConnections(0, 10.0, 60.0)
    assert all(unlimited.admit("10.0.0.1") for _ in range(1000))


async def test_malformed_requests_are_answered_400_and_logged_once_without_their_bytes(caplog) -> None:
    # aiohttp logs each at ERROR with a traceback that quotes the bad line: a flood anyone can cause, with a token in it
    caplog.set_level(logging.DEBUG)
    async with serving(ok_app()) as port:
        for bad in (b"Authorization: Bearer s3cr3t\x01", b"Host: twice", b"no colon s3cr3t"):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ok HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bad + b"\r\n\r\n")
            assert (await asyncio.wait_for(reader.read(65536), GENEROUS)).startswith(b"HTTP/1.0 400")
            assert await closed_by_server(reader)
        assert (await answer_on(*await asyncio.open_connection("127.0.0.1", port))).startswith(b"HTTP/1.1 200")
    assert "s3cr3t" not in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    malformed = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
    assert malformed == ["answered 1 malformed request(s) from 127.0.0.1 with 400 (one line a minute per client)"]


async def test_a_client_that_never_takes_a_large_answer_is_reset_logged_once_and_counted(caplog) -> None:
    # aiohttp's keep-alive timer runs only between requests: a client that sent a request and read nothing held its
    # connection, the handler and the answer's unsent megabytes for as long as it stayed connected
    caplog.set_level(logging.INFO, "finsent.http_guard")
    answer, registry = b"x" * 8_000_000, CollectorRegistry()  # more than the kernel's buffers take on loopback

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=answer)

    app = ok_app()
    app.router.add_get("/big", big)
    async with serving(app, guarded(registry), http_body_timeout=0.3, http_max_connections_per_client=0) as port:
        conns = [await stalled(port, "/big") for _ in range(3)]
        await late_answers(registry, 3)
        for conn in conns:
            taken, end = await asyncio.to_thread(taken_until_closed, conn)
            assert end == "reset" and taken < len(answer) / 2  # the kernel's copy dropped too
            conn.close()
        assert (await answer_on(*await asyncio.open_connection("127.0.0.1", port))).startswith(b"HTTP/1.1 200")
    assert registry.get_sample_value("finsent_http_late_answers_total", {"server": "push"}) == 3
    late = [r for r in caplog.records if "did not take their answer" in r.getMessage()]
    assert len(late) == 1 and late[0].levelno == logging.INFO  # one line a minute per client, not one a connection
    assert late[0].getMessage().startswith("closed 1 connection(s) from 127.0.0.1")
    assert "within 0.3 s (FINSENT_HTTP_BODY_TIMEOUT" in late[0].getMessage()


async def test_the_unsent_rest_of_a_finished_answer_does_not_hold_the_connection_it_closes(monkeypatch) -> None:
    # Under asyncio's high-water mark (64 KiB) an answer's rest waits unsent once the kernel's buffers are full, with
    # no pause: the handler is through, the keep-alive timer closes the connection, and a close waits for that rest
    # to be taken, for as long as the client stays. The server's send buffer is made small so that the kernel takes
    # little of the 40 KB.
    monkeypatch.setattr(http_guard, "KEEPALIVE_TIMEOUT", 0.3)

    async def middling(request: web.Request) -> web.Response:
        request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return web.Response(body=b"x" * 40_000)

    app = ok_app()
    app.router.add_get("/middling", middling)
    registry = CollectorRegistry()
    async with serving(app, guarded(registry), http_body_timeout=0.3) as port:
        conn = await stalled(port, "/middling")
        assert await late_answers(registry, 1) == 1
        taken, end = await asyncio.to_thread(taken_until_closed, conn)  # before: all of it, once the client read
        conn.close()
    assert end == "reset" and taken < 40_000


@pytest.mark.parametrize("value, problem", [("0", "greater than 0"), ("inf", "finite number"), ("-1", "greater")])
def test_the_header_deadline_must_be_positive_and_finite(monkeypatch, value, problem) -> None:
    from finsent.settings import SettingsError

    monkeypatch.setenv("FINSENT_HTTP_HEADER_TIMEOUT", value)
    with pytest.raises(SettingsError, match=f"FINSENT_HTTP_HEADER_TIMEOUT: .*{problem}"):
        load_settings()


# --- the servers -----------------------------------------------------------------------------------------------------

@pytest.fixture
def pipeline(tmp_path):
    from tests.unit.test_ingest_pipeline import started_pipeline

    with started_pipeline(tmp_path) as pipe:
        yield pipe


def push_app(pipeline, **settings):
    from pydantic import SecretStr

    from ingest.push import make_app

    return make_app(pipeline, load_settings(push_token=SecretStr("tok"), push_rate_limit=0, **settings))


async def test_the_push_endpoint_closes_late_headers_and_answers_a_trickled_body_408(pipeline) -> None:
    from ingest.push import BACKLOG, serve

    app = push_app(pipeline, http_body_timeout=0.3)
    async with serving(app, serve, http_header_timeout=0.3, http_body_timeout=0.3) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /documents HTTP/1.1\r\nHost: x\r\n")
        assert await closed_by_server(reader)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"text\": ")
        answer = await asyncio.wait_for(reader.read(65536), GENEROUS)
        assert answer.startswith(b"HTTP/1.1 408") and b"FINSENT_HTTP_BODY_TIMEOUT" in answer
        assert b"Connection: close" in answer
        assert app[BACKLOG].waiting == 0  # the slot is free again
        writer.write(b" " * 90)  # the rest: aiohttp reads (for up to 10 s) what still comes of the body, then closes
        assert await closed_by_server(reader)
    assert pipeline.metrics.errors.labels("push", "invalid", "too_slow")._value.get() == 1
    assert pipeline.metrics.registry.get_sample_value("finsent_http_late_headers_total", {"server": "push"}) == 1


async def test_a_sender_that_leaves_mid_body_is_no_error_in_the_log(pipeline, caplog) -> None:
    from ingest.push import BACKLOG, serve

    caplog.set_level(logging.DEBUG)
    app = push_app(pipeline)
    async with serving(app, serve) as port:
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[{\"text\": ")
            for _ in range(500):  # until the handler reads the body
                if app[BACKLOG].waiting:
                    break
                await asyncio.sleep(0.01)
            writer.close()
            for _ in range(1500):  # until the handler ends
                if not app[BACKLOG].waiting:
                    break
                await asyncio.sleep(0.01)
            assert app[BACKLOG].waiting == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


async def test_the_labels_api_answers_a_trickled_body_408(monkeypatch) -> None:
    from pydantic import SecretStr

    from retrain.labels_http import create_app
    from tests.unit.label_api_fakes import use_fake_publisher

    publisher = use_fake_publisher(monkeypatch)
    app = create_app(load_settings(label_token=SecretStr("tok"), label_rate_limit=0, http_body_timeout=0.3))
    async with serving(app) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /labels HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"text\": ")
        answer = await asyncio.wait_for(reader.read(65536), GENEROUS)
        assert answer.startswith(b"HTTP/1.1 408") and b"FINSENT_HTTP_BODY_TIMEOUT" in answer
        writer.write(b" " * 91)
        assert await closed_by_server(reader)
    assert publisher.published == []


async def test_the_stream_workers_web_server_closes_late_headers_and_caps_a_client() -> None:
    # Faust's web driver served /metrics and /health through a bare AppRunner: half a request line held its
    # connection for aiohttp's keep-alive timer (an hour)
    from stream.app import create_app

    registry, port = CollectorRegistry(), free_port()
    settings = load_settings(http_header_timeout=0.3, http_max_connections_per_client=2)
    app = create_app(settings, registry=registry, web_port=port)
    app.web.init_server()  # the routes, as the worker's start adds them; only the web server starts (no Kafka)
    await app.web.start_server()
    try:
        half = await asyncio.open_connection("127.0.0.1", port)
        half[1].write(b"GET /metr")
        assert await closed_by_server(half[0])
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        for reader, writer in held:  # answered, then idle: not under the header deadline
            writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GENEROUS)).startswith(b"HTTP/1.1 200")
        reader, _ = await asyncio.open_connection("127.0.0.1", port)
        assert await closed_by_server(reader)  # a third of this client's
        for conn in held:
            conn[1].close()
        for _ in range(500):  # the server sees the closes a moment later
            if not app.web._runner.clients.open:
                break
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        page = await asyncio.wait_for(reader.read(), GENEROUS)
    finally:
        await app.web.stop_server()
    assert page.startswith(b"HTTP/1.1 200")
    assert b'finsent_http_late_headers_total{server="worker"} 1.0' in page
    assert b'finsent_http_connections_refused_total{server="worker"} 1.0' in page
    assert b'finsent_http_late_answers_total{server="worker"} 0.0' in page
    assert app.web._runner.clients.answer_timeout == settings.http_body_timeout


def test_dashboards_serve_closes_late_headers_and_stops_on_sigterm(tmp_path) -> None:
    import socket

    port = free_port()
    env = dict(os.environ, FINSENT_HTTP_HEADER_TIMEOUT="0.3", FINSENT_STATE_DIR=str(tmp_path),
               FINSENT_ELASTICSEARCH_URL="http://127.0.0.1:1")  # nothing there: the page is served all the same
    proc = subprocess.Popen([sys.executable, "-m", "finsent.cli", "dashboards", "serve", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert proc.poll() is None, proc.stdout.read().decode()
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as half:
            half.sendall(b"GET / HT")
            assert half.recv(1) == b""  # closed by the server (a timeout here raises)
        with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as whole:
            whole.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert whole.recv(12) == b"HTTP/1.1 200"
        with socket.create_connection(("127.0.0.1", port), timeout=GENEROUS) as scrape:
            scrape.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            page = b"".join(iter(lambda: scrape.recv(65536), b""))
        assert b'finsent_http_late_headers_total{server="dashboard"} 1.0' in page
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stdout.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
