"""What a web page, a local user and a log reader can do to a relay (issue 17, Low).

Every test plays the attack over a real socket against a real relay process:
a page's cross-site request or DNS-rebound ``Host``, a dashboard framed by
another site, an anonymous scrape of ``/metrics``, a label that writes
terminal escapes into the log, and a local user reading the data folder.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.hardening.conftest import ADMIN_TOKEN, Connect, register
from tests.host.conftest import TMUX_REQUIRED, HostWorld, wait_for
from tests.host.conftest import tmux_socket as tmux_socket  # the host daemon's fixtures
from tests.host.conftest import world as world
from tests.support.client import Client, Response
from tests.support.server import RelayProcess


@pytest.fixture(scope="module")
def open_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    """A relay without a token (loopback only), told its public URL."""
    proc = RelayProcess(
        tmp_path_factory.mktemp("open") / "data",
        ["--stale-after", "3600", "--public-url", "https://relay.example.net"],
    ).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def local(open_relay: RelayProcess) -> Iterator[Client]:
    c = Client(open_relay.url)
    try:
        yield c
    finally:
        c.close()


def port_of(relay: RelayProcess) -> int:
    return int(relay.url.rsplit(":", 1)[1])


def heartbeat(c: Client, oid: str, headers: dict[str, str]) -> Response:
    return c.post(f"/api/orchestrators/{oid}/heartbeat", headers=headers)


# -- Host (DNS rebinding) --------------------------------------------------------------------


def test_a_rebound_host_name_is_421_and_changes_nothing(open_relay: RelayProcess, local: Client) -> None:
    port = port_of(open_relay)
    assert local.post("/api/orchestrators", {"id": "g1", "hostname": "h", "baseDir": "/srv/g1"}).status == 201
    head = local.log_head()
    rebound = (
        f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", "relay.example.net.evil"
    )
    for host in rebound:
        for call in (
            lambda h=host: heartbeat(local, "g1", {"Host": h}),
            lambda h=host: local.post("/api/system/reap", headers={"Host": h}),
            lambda h=host: local.get("/api/orchestrators", headers={"Host": h}),
            lambda h=host: local.get("/", headers={"Host": h}),
        ):
            r = call()
            assert r.status == 421, (host, r)
            assert host in r.json["error"] and "--public-url" in r.json["error"]
    assert local.log_head() == head
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "relay.example.net", "LOCALHOST"):
        assert heartbeat(local, "g1", {"Host": host}).status == 200, host


def test_with_a_token_any_host_name_reaches_the_relay(admin: Client) -> None:
    assert admin.get("/api/agents", headers={"Host": "relay.internal:4850"}).status == 200


# -- cross-site requests (CSRF) ---------------------------------------------------------------


def test_cross_site_browser_requests_are_403_and_change_nothing(
    open_relay: RelayProcess, local: Client
) -> None:
    port = port_of(open_relay)
    assert local.post("/api/orchestrators", {"id": "g2", "hostname": "h", "baseDir": "/srv/g2"}).status == 201
    head = local.log_head()
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": f"http://localhost:{port + 1}"},  # another local web app: same site, other origin
        {"Origin": f"http://127.0.0.1:{port}", "Host": f"localhost:{port}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Sec-Fetch-Mode": "cors"},
        {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"},  # a form POST
    ):
        r = heartbeat(local, "g2", headers)
        assert r.status == 403, (headers, r)
        assert "cross-site" in r.json["error"]
        r = local.post("/api/system/reap", headers=headers)
        assert r.status == 403, (headers, r)
        r = local.get("/api/orchestrators", headers={**headers, "Sec-Fetch-Mode": "cors"})
        assert r.status == 403, (headers, r)
    assert local.log_head() == head


def test_what_real_clients_send_still_works(open_relay: RelayProcess, local: Client) -> None:
    port = port_of(open_relay)
    assert local.post("/api/orchestrators", {"id": "g3", "hostname": "h", "baseDir": "/srv/g3"}).status == 201
    # curl: Host, no Origin, no Sec-Fetch-*.
    assert heartbeat(local, "g3", {}).status == 200
    # The dashboard: same-origin fetches (Origin is sent on POST).
    dashboard = {
        "Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"
    }
    assert heartbeat(local, "g3", dashboard).status == 200
    # Behind the public URL's proxy.
    proxied = {
        "Host": "relay.example.net", "Origin": "https://relay.example.net", "Sec-Fetch-Site": "same-origin"
    }
    assert heartbeat(local, "g3", proxied).status == 200
    # ... and behind a proxy that rewrites Host to its upstream's name.
    rewritten = {"Host": "127.0.0.1", "Origin": "https://relay.example.net", "Sec-Fetch-Site": "same-origin"}
    assert heartbeat(local, "g3", rewritten).status == 200
    # A person following a link to the dashboard from another site.
    link = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}
    assert local.get("/", headers=link).status == 200

    # The host daemon: aiohttp's client.
    async def as_a_host() -> int:
        url = f"{open_relay.url}/api/orchestrators/g3/heartbeat"
        async with aiohttp.ClientSession() as session, session.post(url) as r:
            return r.status

    assert asyncio.run(as_a_host()) == 200


def test_cross_site_is_refused_with_a_token_too(admin: Client) -> None:
    r = admin.post("/api/system/reap", headers={"Origin": "https://evil.example"})
    assert r.status == 403, r


def test_public_url_must_be_an_origin(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--data", str(tmp_path / "d"), "--public-url", "ftp://x/y"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "http(s)" in proc.stderr, proc


# -- security headers ---------------------------------------------------------------------------


def test_every_answer_forbids_sniffing_and_framing(local: Client) -> None:
    for method, path in [
        ("GET", "/"),
        ("GET", "/static/app.js"),
        ("GET", "/static/app.css"),
        ("GET", "/static/missing.js"),
        ("GET", "/api/health"),
        ("GET", "/api/agents"),
        ("GET", "/api/nothing-here"),
        ("PUT", "/api/agents"),
        ("POST", "/api/agents"),  # 400/415: an error answer
        ("GET", "/metrics"),
        ("GET", "/api/openapi.json"),
    ]:
        r = local.request(method, path)
        assert r.headers.get("x-content-type-options") == "nosniff", (method, path, r.headers)
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), (method, path)


def test_the_dashboard_runs_only_its_own_files(local: Client) -> None:
    r = local.get("/")
    assert r.status == 200
    csp = {
        d.split()[0]: d.split()[1:] for d in r.headers["content-security-policy"].split(";") if d.strip()
    }
    assert csp["script-src"] == ["'self'"], csp  # no inline script, ever
    # xterm.js writes <style> elements and style attributes (ADR 0038); nothing else may
    # load from another origin, so an injected style has nowhere to send anything.
    assert csp["style-src"] == ["'self'", "'unsafe-inline'"], csp
    for directive in ("default-src", "img-src", "connect-src"):
        assert csp[directive][0] == "'self'" and "*" not in csp[directive], csp
    assert csp["frame-ancestors"] == ["'none'"]
    page = r.body.decode()
    # No inline script (the policy would block it, and the page would break), and no
    # inline style of our own either: only the vendored terminal needs that allowance.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), "inline <script> in index.html"
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page), "inline event handler in index.html"


# -- /metrics behind the token ------------------------------------------------------------------


def test_metrics_need_the_admin_token_when_the_relay_has_one(
    secured: RelayProcess, admin: Client, connect: Connect
) -> None:
    assert admin.get("/metrics").status == 200
    assert b"relay_http_requests_total" in admin.get("/metrics").body
    orchestrator = register(admin, "metrics-o1")
    for token in (None, "wrong", orchestrator):
        who = connect(secured.url, token)
        r = who.get("/metrics")
        assert r.status == 401, r
        assert b"relay_" not in r.body
        assert "--metrics-public" in r.json["error"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    # The document says so.
    doc = admin.get("/api/openapi.json").json
    assert "401" in doc["paths"]["/metrics"]["get"]["responses"]


def test_metrics_public_opens_them_for_a_private_scraper(tmp_path: Path) -> None:
    args = ["--token", ADMIN_TOKEN, "--metrics-public"]
    with RelayProcess(tmp_path / "data", args) as relay:
        anonymous = Client(relay.url)
        try:
            r = anonymous.get("/metrics")
            assert r.status == 200 and b"relay_http_requests_total" in r.body
            assert anonymous.get("/api/agents").status == 401  # the API stays closed
        finally:
            anonymous.close()


# -- log lines escape control characters -------------------------------------------------------

FORGED = "worker\n2026-01-01 00:00:00,000 INFO relay.host: forged line\x1b[2J\x1b[31m\u009b1m\u202e"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_relay_log_lines_escape_control_characters(fmt: str) -> None:
    """The relay's formatters, in a child process writing to a real pipe as ``relay serve`` does."""
    script = (
        "import logging, sys\n"
        "from relay import jsonlog\n"
        f"jsonlog.configure('INFO', {fmt!r})\n"
        "label = sys.argv[1]\n"
        "log = logging.getLogger('relay.test')\n"
        "log.info('spawned %s', label, extra={'label': label})\n"
        "try:\n"
        "    raise ValueError(label)\n"
        "except ValueError:\n"
        "    log.exception('failed on %s', label)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, FORGED], capture_output=True, text=True, timeout=60, check=True
    )
    err = proc.stderr
    assert "\x1b" not in err and "\u009b" not in err and "\u202e" not in err, repr(err)
    lines = err.splitlines()
    assert not any("forged line" in ln and ln.startswith("2026-01-01") for ln in lines), err
    if fmt == "json":
        records = [json.loads(ln) for ln in lines]
        assert len(records) == 2
        assert records[0]["msg"] == "spawned " + (
            "worker\\n2026-01-01 00:00:00,000 INFO relay.host: forged line\\x1b[2J\\x1b[31m\\x9b1m\\u202e"
        )
        assert "\x1b" not in records[0]["label"] and "\n" not in records[0]["label"]
        assert "\x1b" not in records[1]["exc"]
    else:
        records = [ln for ln in lines if not ln.startswith("  ")]
        assert len(records) == 2, err  # a traceback's lines are indented under its record
        assert records[0].endswith("spawned worker\\n2026-01-01 00:00:00,000 INFO relay.host: "
                                   "forged line\\x1b[2J\\x1b[31m\\x9b1m\\u202e"), records[0]


@pytest.mark.skipif(shutil.which("tmux") is None and not TMUX_REQUIRED, reason="tmux is not installed")
def test_a_label_cannot_forge_host_log_lines(world: HostWorld) -> None:
    """The reported attack: a spawn's label with a newline and ANSI escapes, in the host's log."""
    world.start_host()
    command = world.api.spawn(world.oid, provider="claude", cwd=str(world.base / "proj"), label=FORGED)
    world.api.settled(world.oid, command)
    log = wait_for(lambda: world.hosts[0].log() if "forged line" in world.hosts[0].log() else None,
                   what="the label in the host log")
    assert "\x1b" not in log and "\u009b" not in log and "\u202e" not in log, repr(log[-2000:])
    assert not any(ln.startswith("2026-01-01") for ln in log.splitlines()), log[-2000:]
    assert "forged line\\x1b[2J" in log


# -- the data folder is this user's alone -------------------------------------------------------


def test_the_data_folder_and_its_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"

    def assert_private() -> set[str]:
        for p in data.rglob("*"):
            want = 0o700 if p.is_dir() else 0o600
            assert stat.S_IMODE(p.stat().st_mode) == want, (p, oct(p.stat().st_mode))
        return {p.name for p in data.rglob("*")}

    relay = RelayProcess(data, store="sqlite").start()
    try:
        c = Client(relay.url)
        assert c.post("/api/agents", {"id": "private-a"}).status == 201
        c.close()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        running = assert_private()  # the log is open: its WAL and shared memory exist
        assert {"relay.sqlite", "relay.sqlite-wal", "relay.sqlite-shm"} <= running, running
    finally:
        assert relay.stop() == 0  # a clean stop writes the read-model checkpoint
    assert "readmodels.json" in assert_private()


def test_an_existing_folder_open_to_others_is_named_in_a_warning(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    relay = RelayProcess(data, store="sqlite").start()
    try:
        log = "".join(relay.output)
        assert f"the data folder {data} is open to other users" in log, log
        assert "chmod -R go-rwx" in log
        assert stat.S_IMODE(data.stat().st_mode) == 0o755  # the operator's choice is left alone
        assert stat.S_IMODE((data / "relay.sqlite").stat().st_mode) == 0o600
    finally:
        relay.stop()


def test_the_new_settings_read_from_the_environment() -> None:
    from relay.config import Settings, SettingsError

    s = Settings.from_env({"RELAY_METRICS_PUBLIC": "yes", "RELAY_PUBLIC_URL": "https://r.example:8443"})
    assert s.metrics_public is True and s.public_url == "https://r.example:8443"
    assert Settings.from_env({"RELAY_METRICS_PUBLIC": "0"}).metrics_public is False
    with pytest.raises(SettingsError, match="RELAY_METRICS_PUBLIC"):
        Settings.from_env({"RELAY_METRICS_PUBLIC": "maybe"})
    with pytest.raises(SettingsError, match="--public-url"):
        Settings.from_env({"RELAY_PUBLIC_URL": "https://r.example/dashboard"})
