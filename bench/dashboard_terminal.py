"""The dashboard's terminal (issue 16, ADR 0038). Not a test: it prints figures.

Run from the repository root (about a minute on the 2-core machine)::

    .venv/bin/python bench/dashboard_terminal.py
    .venv/bin/python bench/dashboard_terminal.py --lines 400 --burst-mib 4

What runs, each part real and on loopback:

- ``relay serve`` with the output limits raised (``--output-rate`` 64 MiB/s,
  ``--output-pushes`` 1000, ``--output-buffer`` 8 MiB), so that what is
  measured is the page, not the relay's brakes on a host;
- a host played over HTTP from this process: it registers, reports one
  managed agent and pushes its output (``POST /api/orchestrators/{id}/output``,
  the daemon's own request) with a marker ``mark N`` in each line;
- the agent view in headless Chromium (Playwright, ``/usr/bin/chromium``):
  terminal.js and xterm.js draw the stream; a MutationObserver in the page
  notes the epoch time each marker first appears in xterm's rows.

Yardstick, same run and same stream: a raw SSE reader in this process (a
socket and a thread) that notes when each marker arrives: the relay alone,
nothing drawn.

Phases: (1) latency: ``--lines`` lines, one push each, ``--rate`` a second;
push → drawn in the page and push → arrived at the raw reader, p50/p99;
(2) burst: ``--burst-mib`` MiB in 64 KiB pushes as fast as the relay takes
them; time until the last marker is drawn, as MiB/s, beside the raw reader.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness import Server, load_average, machine, median, pct

CHROMIUM = Path(os.environ.get("RELAY_CHROMIUM", "/usr/bin/chromium"))
OID, AID = "bench-host", "bench-agent"
MARKS = """
window.__marks = {};
const seen = () => {
  const rows = document.querySelector('#term-box .xterm-rows');
  if (!rows) return;
  const now = performance.timeOrigin + performance.now();
  for (const m of rows.textContent.matchAll(/mark (\\d+) /g)) window.__marks[m[1]] ??= now;
};
new MutationObserver(seen).observe(document, { subtree: true, childList: true, characterData: true });
"""


def call(url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


class RawReader:
    """The output stream read from a socket by a thread: when did each marker arrive?"""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.sendall(
            f"GET /api/orchestrators/{OID}/agents/{AID}/output HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        self.marks: dict[int, float] = {}
        self.snapshot = threading.Event()
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        tail = ""
        try:
            while data := self.sock.recv(1 << 20):
                now = time.time() * 1000
                text = tail + data.decode("utf-8", errors="replace")
                if "event: snapshot" in text:
                    self.snapshot.set()
                # Markers may be split across reads: keep a short tail for the next one.
                for part in text.split("mark ")[1:]:
                    number = part.split(" ", 1)[0]
                    if number.isdigit() and " " in part:
                        with self.lock:
                            self.marks.setdefault(int(number), now)
                tail = text[-32:]
        except OSError:
            pass

    def close(self) -> None:
        self.sock.close()


def push(url: str, token: str, data: str, kind: str = "output") -> int:
    chunk = {"agentId": AID, "kind": kind, "data": data, "at": int(time.time() * 1000)}
    if kind == "snapshot":
        chunk.update(reset=True, cols=120, rows=30)
    return int(call(url, "POST", f"/api/orchestrators/{OID}/output", {"chunks": [chunk]}, token)["delivered"])


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def until(page: Any, expression: str, timeout: float, what: str) -> None:
    """Poll an expression in the page (wait_for_function evaluates strings, which its CSP refuses)."""
    wait(lambda: page.evaluate(expression), timeout, what)


def latencies(marks: dict[int, float], pushed: dict[int, float]) -> list[float]:
    return [marks[n] - t for n, t in pushed.items() if n in marks]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200, help="lines in the latency phase")
    ap.add_argument("--rate", type=float, default=20.0, help="pushes a second in the latency phase")
    ap.add_argument("--burst-mib", type=float, default=2.0, help="MiB pushed at once in the burst phase")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    print(f"# dashboard terminal · {machine()} · load {load_average()}")
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data", extra=[
            "--output-rate", str(64 << 20), "--output-pushes", "1000", "--output-buffer", str(8 << 20),
            "--output-push-max", str(1 << 20),
        ]).start()
        try:
            url = server.url
            token = call(url, "POST", "/api/orchestrators", {
                "id": OID, "hostname": OID, "baseDir": "/srv/work", "providers": ["claude"],
            })["orchestratorToken"]
            call(url, "PATCH", f"/api/orchestrators/{OID}/agents", {"agents": [{
                "agentId": AID, "provider": "claude", "tmuxSession": f"relay-{AID}", "cwd": "/srv/work",
            }]}, token)
            with sync_playwright() as p:
                browser = p.chromium.launch(
                    executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                page.add_init_script(MARKS)
                # (0) what the page downloads: the fleet view, then an agent view on top
                loaded: dict[str, int] = {}
                page.on("requestfinished", lambda r: loaded.setdefault(r.url, r.sizes()["responseBodySize"])
                        if "/static/" in r.url or r.url.endswith("/") else None)
                page.goto(f"{url}/#orchestrators")
                until(page, "document.querySelector('#stream').dataset.state === 'live'", 20, "the page")
                fleet_bytes = sum(loaded.values())
                page.goto(f"{url}/#agent/{OID}/{AID}")
                until(page, "document.querySelector('#term-box .xterm-rows') !== null", 20, "xterm.js")
                print(f"page weight: the fleet view {fleet_bytes / 1024:6.1f} KiB; an agent view adds "
                      f"{(sum(loaded.values()) - fleet_bytes) / 1024:6.1f} KiB (xterm.js, once)")
                for name, size in sorted(loaded.items()):
                    print(f"  {size / 1024:7.1f} KiB  {name.removeprefix(url)}")
                raw = RawReader(url)
                # Both viewers wait for a screen: push one until both have it.
                wait(lambda: push(url, token, "\x1b[1mbench\x1b[0m\r\n", "snapshot") >= 1
                     and raw.snapshot.wait(0.2), 20, "both viewers to watch")
                until(page, "document.querySelector('#term-status').dataset.state === 'live'", 20, "live")

                # (1) latency, one line a push
                pushed: dict[int, float] = {}
                for n in range(args.lines):
                    pushed[n] = time.time() * 1000
                    push(url, token, f"\x1b[36mmark {n} \x1b[0m{'x' * 60}\r\n")
                    time.sleep(1 / args.rate)  # the pace of a program printing, not a synchronisation
                last = args.lines - 1
                until(page, f"window.__marks[{last}] !== undefined", 30, "the last line drawn")
                wait(lambda: last in raw.marks, 30, "the raw reader")
                seen = {int(k): v for k, v in page.evaluate("window.__marks").items()}
                drawn, arrived = latencies(seen, pushed), latencies(raw.marks, pushed)
                print(f"latency push -> drawn in the page  p50 {median(drawn):6.1f} ms  "
                      f"p99 {pct(drawn, 99):6.1f} ms  ({len(drawn)} of {args.lines} markers seen)")
                print(f"latency push -> raw SSE reader     p50 {median(arrived):6.1f} ms  "
                      f"p99 {pct(arrived, 99):6.1f} ms  (yardstick)")
                ratio = median(drawn) / max(median(arrived), 0.001)
                print(f"  ratio page/raw (p50)             {ratio:6.2f}x")

                # (2) burst: 64 KiB pushes back to back, a marker in every line
                line = "\x1b[33m" + "y" * 90 + "\x1b[0m"
                per_push = 64 * 1024
                total = int(args.burst_mib * (1 << 20))
                n, sent, start = args.lines, 0, time.time() * 1000
                while sent < total:
                    lines = []
                    size = 0
                    while size < per_push:
                        text = f"mark {n} {line}\r\n"
                        lines.append(text)
                        size += len(text)
                        n += 1
                    push(url, token, "".join(lines))
                    sent += size
                last = n - 1
                until(page, f"window.__marks[{last}] !== undefined", 120, "the burst drawn")
                wait(lambda: last in raw.marks, 60, "the raw reader")
                page_ms = page.evaluate(f"window.__marks[{last}]") - start
                raw_ms = raw.marks[last] - start
                mib = sent / (1 << 20)
                print(f"burst {mib:.1f} MiB in 64 KiB pushes: drawn in the page after {page_ms:7.0f} ms "
                      f"({mib / (page_ms / 1000):5.2f} MiB/s)")
                print(f"                                  raw SSE reader after {raw_ms:7.0f} ms "
                      f"({mib / (raw_ms / 1000):5.2f} MiB/s, yardstick)")
                state = page.evaluate("document.querySelector('#term-status').dataset.state")
                print(f"  terminal state after the burst: {state} "
                      "(a viewer too slow would have been cut: 'reconnecting')")
                raw.close()
                browser.close()
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
