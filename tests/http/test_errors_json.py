"""Every answer that is an error is the contract's JSON ``{"error": ...}`` (issue 12).

Including the ones aiohttp makes before any application code runs (a request
line or header over its limits), a missing dashboard file, and a 405, whose
``Allow`` header must agree with the served OpenAPI document.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.client import Client
from tests.support.server import RelayProcess

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def raw_exchange(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (http.client refuses over-long lines) and read the whole answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def wait_for_output(relay: RelayProcess, since: int, words: str, timeout: float = 10.0) -> None:
    """Until the relay's output after line ``since`` holds ``words`` (its pipe is read by a thread)."""
    deadline = time.monotonic() + timeout
    while not any(words in line for line in relay.output[since:]):
        assert time.monotonic() < deadline, relay.output[since:]
        time.sleep(0.01)


def assert_json_error(status: int, headers: dict[str, str], body: bytes, want: int, words: str) -> None:
    assert status == want, (status, body)
    assert headers["content-type"].startswith("application/json"), headers
    message = json.loads(body)["error"]
    assert words in message, message


@pytest.mark.parametrize(
    ("request_bytes", "status", "words"),
    [
        (b"GET /api/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "request line"),
        (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "header"),
        (b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Path: /" + b"a" * 9000 + b"\r\n\r\n", 431, "header"),
        (
            b"GET /api/health HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
            431,
            "too many headers",
        ),
        (b"GET /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400, "malformed"),
    ],
    ids=["request-line", "header", "header-like-a-path", "header-count", "bad-framing"],
)
def test_requests_over_aiohttp_limits_answer_json_and_log_one_line(
    relay: RelayProcess, request_bytes: bytes, status: int, words: str
) -> None:
    before = len(relay.output)
    got = raw_exchange(relay.url, request_bytes)
    assert_json_error(*got, status, words)
    assert got[1].get("x-content-type-options") == "nosniff"
    # The relay still serves, and logged the refusal as one line with no traceback.
    probe = Client(relay.url)
    assert probe.get("/api/health").status == 200
    probe.close()
    wait_for_output(relay, before, "refused a request")
    logged = relay.output[before:]
    assert "Traceback" not in "".join(logged), logged
    assert sum("refused a request" in line for line in logged) == 1, logged


def test_missing_static_file_is_a_json_404(client: Client) -> None:
    r = client.get("/static/missing.js")
    assert r.status == 404, r
    assert r.headers["content-type"].startswith("application/json")
    assert "/static/missing.js" in r.json["error"]
    assert client.get("/static/app.js").status == 200
    assert client.get("/static/../pyproject.toml").status == 404


def test_every_405_allows_exactly_what_the_document_says(client: Client) -> None:
    doc = client.get("/api/openapi.json").json
    checked = 0
    for template, ops in doc["paths"].items():
        path = template.replace("{id}", "x1").replace("{commandId}", "c1")
        documented = {m.upper() for m in ops if m in HTTP_METHODS}
        for method in ("PUT", "DELETE", "PATCH", "POST"):
            if method in documented:
                continue
            r = client.request(method, path)
            if r.status != 405:  # another template matches this path with that method
                continue
            assert r.headers["content-type"].startswith("application/json"), (method, path)
            assert method in r.json["error"]
            allow = {m.strip() for m in r.headers["allow"].split(",")}
            assert allow == documented, (method, path, allow)
            checked += 1
    assert checked >= 30
    # /api/agents/spawn is also /api/agents/{id}: the document's literal path decides.
    r = client.request("PUT", "/api/agents/spawn")
    assert r.status == 405 and r.headers["allow"] == "POST", r.headers


def test_unknown_log_level_is_refused(tmp_path: Path) -> None:
    # --host 0.0.0.0 without a token also fails (later), so a relay that let LOUD through
    # exits at once instead of serving until the timeout.
    for args, env in [(["--log-level", "LOUD"], {}), ([], {"RELAY_LOG_LEVEL": "LOUD"})]:
        serve = ["serve", "--host", "0.0.0.0", "--port", "0", "--data", str(tmp_path / "d")]
        proc = subprocess.run(
            [sys.executable, "-m", "relay", *serve, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", **env},
        )
        assert proc.returncode == 2, proc
        assert "LOUD" in proc.stderr and "DEBUG" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--log-level", "warning", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    for option, env in [
        ("--log-level", "RELAY_LOG_LEVEL"),
        ("--public-url", "RELAY_PUBLIC_URL"),
        ("--metrics-public", "RELAY_METRICS_PUBLIC"),
    ]:
        assert option in ok.stdout and env in ok.stdout, option
