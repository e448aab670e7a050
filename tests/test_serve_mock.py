"""The mock over REAL loopback HTTP: plain httpx, the official SDKs, the serve-mock CLI.

These tests use real sockets and real (tiny) time; the mock's latency is 0 so they stay fast.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llm_patterns.__main__ import main
from llm_patterns.mock import MockLLMServer, running, serve
from llm_patterns.mock.http import make_server

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "Explain exponential backoff briefly"}]
PLAIN = {"model": "gpt-4o-mini", "messages": MESSAGES}


def real_mock(**kw):
    kw.setdefault("latency", 0.0)
    return MockLLMServer(**kw)  # SystemClock: a real server


def test_plain_httpx_over_loopback():
    server = real_mock(rpm=600)
    with running(server) as url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        with httpx.Client(base_url=url, timeout=5) as client:
            r = client.post("/v1/chat/completions",
                            json={"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20})
            missing = client.post("/v1/nope", json={})
    assert r.status_code == 200
    assert r.json()["object"] == "chat.completion"
    assert r.headers["x-ratelimit-limit-requests"] == "600"
    assert int(r.headers["content-length"]) == len(r.content)
    assert missing.status_code == 404
    assert server.stats["by_status"] == {200: 1, 404: 1}


def test_openai_sdk_over_loopback():
    openai = pytest.importorskip("openai")
    server = real_mock()
    with running(server) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="test", max_retries=0, timeout=5)
        out = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                             max_tokens=30)
        assert out.choices[0].message.content.startswith(("Summary", "In short", "Key point",
                                                          "Answer"))
        assert out.usage.completion_tokens <= 30
        server.fail_next("rate_limit")
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=30)
        assert info.value.response.headers["retry-after"] == "1"
        server.fail_next("server_error")
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=30)
        server.fail_next("auth")
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=30)
        server.fail_next("context_length_exceeded")
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=30)
        assert info.value.code == "context_length_exceeded"
        # the keep-alive connection still works after errors
        assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES,
                                              max_tokens=5).choices
    assert server.stats["by_status"] == {200: 2, 400: 1, 401: 1, 429: 1, 500: 1}


def test_anthropic_sdk_over_loopback():
    anthropic = pytest.importorskip("anthropic")
    server = real_mock(api="anthropic", tpm=100_000)
    with running(server) as url:
        client = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0, timeout=5)
        msg = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=40,
                                     system="Be brief.", messages=MESSAGES)
        assert msg.content[0].type == "text" and msg.content[0].text
        assert msg.stop_reason == "end_turn" and msg.usage.output_tokens <= 40
        server.fail_next("overloaded")
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.create(model="claude-3-5-haiku-latest", max_tokens=40,
                                   messages=MESSAGES)
        assert info.value.status_code == 529
        server.fail_next("rate_limit")
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model="claude-3-5-haiku-latest", max_tokens=40,
                                   messages=MESSAGES)
    assert server.stats["by_status"] == {200: 1, 429: 1, 529: 1}


def test_timeout_fault_hangs_up_without_answering():
    server = real_mock()
    server.fail_next("timeout")
    with running(server) as url, httpx.Client(base_url=url, timeout=5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/chat/completions", json=PLAIN)
        assert client.post("/v1/chat/completions", json=PLAIN).status_code == 200
    assert server.stats["timeouts"] == 1


def test_malformed_fault_over_loopback_is_html():
    server = real_mock()
    server.fail_next("malformed")
    with running(server) as url, httpx.Client(base_url=url, timeout=5) as client:
        r = client.post("/v1/chat/completions", json=PLAIN)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == "<html>502 Bad Gateway</html>"


def test_serve_returns_the_bound_port_and_port_in_use_is_a_clear_error():
    server = real_mock()
    httpd, thread = serve(server, port=0)
    try:
        port = httpd.server_port
        assert port > 0 and thread.is_alive()
        assert httpd.server_address[0] == "127.0.0.1"  # loopback only
        with pytest.raises(OSError, match=rf"port {port} .*already in use"):
            make_server(real_mock(), port)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(ValueError, match="port"):
        make_server(server, port=70_000)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_bad_arguments_exit_2(capsys):
    for argv in (["serve-mock", "--outage", "5"], ["serve-mock", "--fail", "explode"],
                 ["serve-mock", "--fail", "auth:0"], ["serve-mock", "--api", "gemini"],
                 ["no-such-command"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert "START:END" in err and "explode" in err and "COUNT" in err


def test_cli_help_lists_serve_mock(capsys):
    assert main([]) == 0
    assert "serve-mock" in capsys.readouterr().out


def test_cli_help_lists_every_option_and_fault_kind(capsys):
    with pytest.raises(SystemExit):
        main(["serve-mock", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--itpm", "--otpm", "--chunk-delay", "--prompt-caching", "--reasoning-tokens",
                   "--read-timeout", "--workers", "--max-connections", "--max-body-bytes"):
        assert option in out
    for kind in ("credit_balance_too_low", "enforced_spend_limit_reached", "stream_drop"):
        assert kind in out.replace("- ", "-")


def test_cli_reports_a_port_in_use(capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve-mock", "--port", str(port)]) == 1
    assert f"port {port}" in capsys.readouterr().err


def test_cli_serve_mock_subprocess():
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llm_patterns", "serve-mock", "--port", str(port), "--latency",
         "0", "--rpm", "600", "--fail", "rate_limit:1", "--outage", "3600:3601:502"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == (f"serving mock openai API on http://127.0.0.1:{port}/v1 "
                                "(Ctrl+C to stop)")
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 10
        statuses = []
        with httpx.Client(base_url=url, timeout=2) as client:
            while len(statuses) < 2:
                try:
                    r = client.post("/chat/completions", json=PLAIN)
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "serve-mock never answered"
                    time.sleep(0.05)
                    continue
                statuses.append(r.status_code)
        assert statuses == [429, 200]  # --fail rate_limit:1, then a normal answer
        assert r.headers["x-ratelimit-limit-requests"] == "600"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "stopped after 2 requests" in out
