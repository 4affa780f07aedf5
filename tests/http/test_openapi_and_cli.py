"""The served OpenAPI document covers every route; the CLI explains every option."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from relay.config import Settings
from relay.http.app import create_app
from tests.support.client import Client


def test_openapi_lists_every_api_route(client: Client) -> None:
    doc = client.get("/api/openapi.json").json
    assert doc["openapi"].startswith("3.")
    app = create_app(Settings(data_dir=Path("/nonexistent-not-started")))
    served: set[tuple[str, str]] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or not path.startswith("/api/") or route.method in ("HEAD", "OPTIONS", "*"):
            continue
        served.add((path, route.method.lower()))
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    missing = served - documented
    assert not missing, f"routes missing from the OpenAPI document: {sorted(missing)}"
    stale = {pm for pm in documented if pm[0].startswith("/api/")} - served
    assert not stale, f"documented routes that do not exist: {sorted(stale)}"


def test_openapi_documents_every_error_the_contract_names(client: Client) -> None:
    doc = client.get("/api/openapi.json").json
    post = doc["paths"]["/api/orchestrators/{id}/spawn"]["post"]["responses"]
    for status in ("202", "400", "404", "409", "413", "415"):
        assert status in post, status
    assert doc["components"]["schemas"]["Error"]["required"] == ["error"]


def test_help_explains_every_serve_option() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option, env in [
        ("--host", "RELAY_HOST"),
        ("--port", "RELAY_PORT"),
        ("--data", "RELAY_DATA"),
        ("--store", "RELAY_STORE"),
        ("--postgres-dsn", "RELAY_POSTGRES_DSN"),
        ("--token", "RELAY_TOKEN"),
        ("--stale-after", "RELAY_STALE_AFTER"),
        ("--reap-every", "RELAY_REAP_EVERY"),
    ]:
        assert option in out and env in out, option
    top = subprocess.run(
        [sys.executable, "-m", "relay", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"serve\s+run the relay", top)


def test_bad_settings_exit_non_zero_with_a_message(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--store", "postgres", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert "postgres-dsn" in r.stderr


def test_settings_from_env_and_flags_precedence() -> None:
    s = Settings.from_env({"RELAY_PORT": "5000", "RELAY_STALE_AFTER": "30", "RELAY_DATA": "/d"})
    assert (s.port, s.stale_after, str(s.data_dir)) == (5000, 30.0, "/d")
    from relay.cli import build_parser, settings_from

    args = build_parser().parse_args(["serve", "--port", "6000"])
    s2 = settings_from(args, {"RELAY_PORT": "5000", "RELAY_REAP_EVERY": "3"})
    assert (s2.port, s2.reap_every) == (6000, 3.0)


def test_dashboard_is_served_and_revalidated(client: Client) -> None:
    page = client.get("/")
    assert page.status == 200 and b"<html" in page.body.lower()
    script = client.get("/static/app.js")
    assert script.status == 200 and script.headers["cache-control"] == "no-cache"
    assert client.get("/static/../pyproject.toml").status == 404
