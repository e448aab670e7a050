"""serve-mock under abuse: stalled and slow clients, floods, huge and hostile bodies, bad HTTP,
bad constructor arguments. The load test runs the real CLI in a subprocess and reads its thread
count and memory from /proc (bounds on counts, never on timings)."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from llm_patterns.clock import VirtualClock
from llm_patterns.mock import MockLLMServer, running, serve
from llm_patterns.mock.http import make_server

ROOT = Path(__file__).resolve().parents[1]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}],
        "max_tokens": 10}
STALLED = 400
CONCURRENT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Threads", "VmRSS"):
            out[key] = int(value.split()[0])  # VmRSS in kB
    return out


def _raw(url: str, data: bytes, read: int = 65536) -> bytes:
    host, port = url[len("http://"):].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(read)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


# ---------------------------------------------------------------- the load test


@pytest.mark.slow
def test_stalled_and_concurrent_clients_threads_and_memory_stay_bounded():
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_patterns", "serve-mock", "--port", str(port), "--latency",
         "0", "--read-timeout", "1.5", "--workers", "16"],
        cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )
    try:
        assert "serving mock openai API" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        before = _proc_status(proc.pid)

        async def attack():
            stalled = []
            for i in range(STALLED):  # connect and say nothing, or half a request head
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                if i % 2:
                    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
                    await writer.drain()
                stalled.append((reader, writer))
            limits = httpx.Limits(max_connections=CONCURRENT, max_keepalive_connections=0)
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                answers = await asyncio.gather(*(
                    client.post("/v1/chat/completions", json=BODY) for _ in range(CONCURRENT)))
            during = _proc_status(proc.pid)
            # the server drops every stalled connection after its read timeout
            closed = await asyncio.gather(*(
                asyncio.wait_for(reader.read(100), timeout=10) for reader, _ in stalled))
            for _, writer in stalled:
                writer.close()
            return answers, during, closed

        answers, during, closed = asyncio.run(attack())
        assert [r.status_code for r in answers] == [200] * CONCURRENT
        assert all(r.json()["object"] == "chat.completion" for r in answers)
        assert all(data == b"" for data in closed)  # EOF: closed by the server, no answer
        # one event loop: no thread per connection (400 stalled + 300 busy clients)
        assert during["Threads"] <= before["Threads"] + 2, (before, during)
        assert during["VmRSS"] - before["VmRSS"] < 64 * 1024, (before, during)  # < 64 MB

        # a 4 GB Content-Length alone: 413 at once, nothing reserved
        head = _raw(url, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: "
                    b"application/json\r\ncontent-length: 4000000000\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")
        # a real 100 MB body: 413 without reading it into memory
        with httpx.Client(base_url=url, timeout=30) as client:
            big = client.post("/v1/chat/completions", content=b"x" * 100_000_000,
                              headers={"content-type": "application/json"})
            assert big.status_code == 413 and "maximum" in big.json()["error"]["message"]
            after = _proc_status(proc.pid)
            assert after["VmRSS"] - before["VmRSS"] < 64 * 1024, (before, after)
            assert client.post("/v1/chat/completions", json=BODY).status_code == 200
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert f"stopped after {CONCURRENT + 3} requests" in out


# ---------------------------------------------------------------- bounded, in one process


def test_read_timeout_drops_a_stalled_client_without_holding_a_worker():
    server = MockLLMServer(latency=0.0)
    httpd, thread = serve(server, read_timeout=0.3, workers=1)
    try:
        stalled = socket.create_connection(("127.0.0.1", httpd.server_port), timeout=5)
        stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")  # never finished
        with httpx.Client(base_url=httpd.url, timeout=5) as client:  # the one worker is free
            assert client.post("/v1/chat/completions", json=BODY).status_code == 200
        assert stalled.recv(100) == b""  # dropped after the read timeout
        stalled.close()
        assert httpd.stats["read_timeouts"] >= 1
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_slow_drip_of_header_bytes_is_cut_off_at_the_read_timeout():
    server = MockLLMServer(latency=0.0)
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    httpd, thread = serve(server, read_timeout=0.3)
    sent = 0
    try:
        with socket.create_connection(("127.0.0.1", httpd.server_port), timeout=5) as sock:
            try:
                for byte in head:  # one byte every 50 ms: each read is quick, the head is not
                    sock.sendall(bytes([byte]))
                    sent += 1
                    time.sleep(0.05)
                answer = sock.recv(100)
            except OSError:  # reset by the server
                answer = b""
        assert answer == b""  # never answered: dropped before the head was complete
        assert sent < len(head) or httpd.stats["read_timeouts"] >= 1
        assert httpd.stats["requests"] == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_workers_bound_the_requests_answered_at_once():
    server = MockLLMServer(latency=0.2)
    seen = []
    httpd, thread = serve(server, workers=2)
    try:
        def watch():
            for _ in range(40):
                seen.append(httpd.stats["workers_busy"])
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()

        async def burst():
            async with httpx.AsyncClient(base_url=httpd.url, timeout=10) as client:
                return await asyncio.gather(*(client.post("/v1/chat/completions", json=BODY)
                                              for _ in range(6)))

        answers = asyncio.run(burst())
        watcher.join()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert [r.status_code for r in answers] == [200] * 6
    assert max(seen) == 2  # never more than the pool, and the pool was used


def test_max_connections_closes_the_extra_ones():
    server = MockLLMServer(latency=0.0)
    httpd, thread = serve(server, max_connections=2, read_timeout=5)
    try:
        held = [socket.create_connection(("127.0.0.1", httpd.server_port)) for _ in range(2)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", httpd.server_port), timeout=5)
        assert extra.recv(10) == b""  # closed at once
        extra.close()
        for sock in held:
            sock.close()
        assert httpd.stats["connections_refused"] >= 1
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_listen_backlog_is_at_least_128():
    server = MockLLMServer(latency=0.0)
    with pytest.raises(ValueError, match="backlog"):
        make_server(server, backlog=5)
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("needs ss (iproute2) to read the kernel's backlog")
    httpd, thread = serve(server)
    try:
        time.sleep(0.1)  # serving: asyncio has called listen() again by now
        out = subprocess.run([ss, "-ltn", f"sport = :{httpd.server_port}"], capture_output=True,
                             text=True, check=True).stdout
        (line,) = [row for row in out.splitlines() if row.startswith("LISTEN")]
        backlog = int(line.split()[2])  # Send-Q of a listening socket: its backlog
        assert backlog >= 128 and backlog == min(httpd.backlog, _somaxconn())
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _somaxconn() -> int:
    try:
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    except OSError:
        return 4096


# ---------------------------------------------------------------- hostile requests


def test_bad_bodies_and_bad_http_are_4xx_never_500():
    server = MockLLMServer(latency=0.0)
    with running(server) as url, httpx.Client(base_url=url, timeout=5) as client:
        deep = client.post("/v1/chat/completions", content=b"[" * 200_000,
                           headers={"content-type": "application/json"})
        deep_obj = client.post("/v1/messages", content=b'{"a":' * 50_000,
                               headers={"content-type": "application/json"})
        text = client.post("/v1/chat/completions", content=b'{"model": "m"}',
                           headers={"content-type": "text/plain"})
        none = client.post("/v1/chat/completions", content=b'{"model": "m"}')
        binary = client.post("/v1/messages", content=bytes(range(256)),
                             headers={"content-type": "application/json"})
        ok = client.post("/v1/chat/completions", json=BODY)
        garbage = _raw(url, b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        huge_head = _raw(url, b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 100_000
                         + b"\r\n\r\n")
    assert deep.status_code == 400 and "could not parse the JSON body" in deep.text
    assert deep_obj.status_code == 400 and deep_obj.json()["error"]["type"] == \
        "invalid_request_error"
    assert text.status_code == 415 and none.status_code == 415
    assert binary.status_code == 400
    assert ok.status_code == 200  # the server is fine afterwards
    assert garbage.startswith(b"HTTP/1.1 400 ")
    assert huge_head.startswith(b"HTTP/1.1 431 ")
    assert 500 not in server.stats["by_status"]


def test_expect_100_continue_is_answered_and_an_oversized_one_refused_first():
    server = MockLLMServer(latency=0.0, max_body_bytes=10_000)
    body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}'
    with running(server) as url:
        host, port = url[len("http://"):].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: "
                         b"application/json\r\nexpect: 100-continue\r\ncontent-length: "
                         + str(len(body)).encode() + b"\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
            sock.sendall(body)
            assert sock.recv(100).startswith(b"HTTP/1.1 200 OK")
        big = _raw(url, b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: "
                   b"application/json\r\nexpect: 100-continue\r\ncontent-length: 20000\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 413 ") and b" 100 " not in big.split(b"\r\n")[0]


def test_chunked_body_past_the_limit_is_413():
    server = MockLLMServer(latency=0.0, max_body_bytes=1000)
    with running(server) as url, httpx.Client(base_url=url, timeout=5) as client:
        def chunks():
            for _ in range(10):
                yield b"x" * 500

        r = client.post("/v1/chat/completions", content=chunks(),
                        headers={"content-type": "application/json"})
        small = client.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 413 and small.status_code == 200


def test_oversized_body_is_413_in_process_too():
    server = MockLLMServer(clock=VirtualClock(), latency=0.0, max_body_bytes=100, api="anthropic")
    with server.client() as client:
        r = client.post("/v1/messages", content=b"{" + b" " * 200 + b"}",
                        headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"]["type"] == "request_too_large"


# ---------------------------------------------------------------- constructor checks

NUMBER_ARGS = {
    # argument: (a bad value of the right type, ValueError); every one also refuses the others
    "latency": -1.0, "error_rate": 1.5, "burst_seconds": 0.0, "tpm_multiplier": 0.0,
    "timeout_after": -1.0, "chunk_delay": -0.5, "rpm": 0.0, "tpm": -5.0, "itpm": 0.0,
    "otpm": -1.0,
}
INT_ARGS = {"seed": None, "context_window": 0, "log_size": 0, "reasoning_tokens": -1,
            "max_body_bytes": 0}


@pytest.mark.parametrize("name", sorted(NUMBER_ARGS))
@pytest.mark.parametrize("value, error", [
    (math.nan, ValueError), (math.inf, ValueError), (-math.inf, ValueError),
    ("10", TypeError), (True, TypeError), ([1], TypeError), ("bad-default", ValueError),
])
def test_number_arguments_are_checked(name, value, error):
    if value == "bad-default":
        value = NUMBER_ARGS[name]
    with pytest.raises(error, match=name):
        MockLLMServer(clock=VirtualClock(), **{name: value})


@pytest.mark.parametrize("name", sorted(INT_ARGS))
@pytest.mark.parametrize("value, error", [
    (math.nan, TypeError), (1.5, TypeError), ("10", TypeError), (True, TypeError),
    ("bad-default", None),
])
def test_integer_arguments_are_checked(name, value, error):
    if value == "bad-default":
        value = INT_ARGS[name]
        error = TypeError if value is None else ValueError
    with pytest.raises(error, match=name):
        MockLLMServer(clock=VirtualClock(), **{name: value})


@pytest.mark.parametrize("kwargs, error, words", [
    ({"seed": math.nan}, TypeError, "seed must be an int, got nan"),
    ({"seed": "10"}, TypeError, "seed must be an int, got '10'"),
    ({"seed": None}, TypeError, "seed must be an int, got None"),
    ({"api": "gemini"}, ValueError, "api must be one of 'openai', 'anthropic', got 'gemini'"),
    ({"prompt_caching": "yes"}, TypeError, "prompt_caching must be True or False"),
    ({"keep_log": 1}, TypeError, "keep_log"),
    ({"model": ""}, ValueError, "model"),
    ({"name": 5}, TypeError, "name"),
    ({"rpm": 30, "burst_seconds": 1.0}, ValueError, "burst_seconds"),  # holds < 1 request
])
def test_constructor_messages_name_parameter_value_and_expectation(kwargs, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        MockLLMServer(clock=VirtualClock(), **kwargs)


@pytest.mark.parametrize("kwargs, error", [
    ({"workers": 0}, ValueError), ({"workers": 1.5}, TypeError),
    ({"read_timeout": 0}, ValueError), ({"read_timeout": math.nan}, ValueError),
    ({"max_connections": "9"}, TypeError), ({"max_header_bytes": 10}, ValueError),
    ({"port": -1}, ValueError), ({"port": 70_000}, ValueError),
])
def test_http_server_arguments_are_checked(kwargs, error):
    server = MockLLMServer(latency=0.0)
    port = kwargs.pop("port", 0)
    with pytest.raises(error):
        make_server(server, port, **kwargs)
