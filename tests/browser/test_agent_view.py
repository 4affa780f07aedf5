"""Issue 16 on the page: an agent's terminal, the needs-input queue, answers, notifications.

The first test is a whole operator's moment with every part real: a relay, the
host daemon, tmux, git, and the stub provider that prints, asks ``Proceed?
[y/N]``, reads a line and echoes it (``tests/host/asking_stub.py``). The page
spawns it in a worktree, shows its terminal (xterm.js fed by the output
stream), raises the badge, the tab title and a browser notification when the
host reports it waiting, and answers it from the queue and from the input box.

The others need no host: an orchestrator is registered and its agents'
attention reported over HTTP, as a host would, to check the queue's order and
what the page says when an agent's terminal cannot be had.

Browser notifications cannot be observed in a headless browser, so an init
script stands in for ``window.Notification`` (it records what the page shows)
and says the page is not in front (``document.hasFocus``), which is when the
page notifies. A MutationObserver records every count the badge showed, so a
short-lived state (the question answered, before the stub asks again) is seen
without polling for it.
"""

from __future__ import annotations

import re
import shlex
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.support import DESKTOP, Api, playwright_api
from tests.host.conftest import HostProcess, HostWorld, Tmux, requires_tmux, wait_for
from tests.host.conftest import _tmux_present_when_required as _tmux_present_when_required
from tests.host.conftest import tmux_socket as tmux_socket
from tests.host.gitrepo import make_repo

pytestmark = pytest.mark.browser
expect = playwright_api().expect

ASK = Path(__file__).parents[1] / "host" / "asking_stub.py"

WATCH = """
window.__notices = [];
window.Notification = class {
  static permission = 'default';
  static async requestPermission() { window.Notification.permission = 'granted'; return 'granted'; }
  constructor(title, options) { window.__notices.push({ title, ...options }); }
  close() {}
};
Document.prototype.hasFocus = () => false;  // the operator is in another window
window.__badge = [];
new MutationObserver(() => {
  const el = document.getElementById('nav-input-count');
  if (!el) return;
  const shown = el.hidden ? '0' : el.textContent;
  if (window.__badge[window.__badge.length - 1] !== shown) window.__badge.push(shown);
}).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
"""


@pytest.fixture
def world(tmp_path: Path, tmux_socket: Tmux) -> Iterator[HostWorld]:
    """A relay, and a host daemon whose ``claude`` is the asking stub (quiet 1 s = waiting)."""
    w = HostWorld(tmp_path, tmux_socket)
    make_repo(w.base / "proj" / "app")
    w.relay.start()
    args = [*w.host_args(providers=()), "--provider", f"claude={shlex.join([sys.executable, str(ASK)])}"]
    w.hosts.append(HostProcess(args, w.root / "host.log").start(["--idle-after", "1"]))
    w.wait_online()
    yield w
    w.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh desktop page that records notifications and badge counts; no JS errors allowed."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    context.add_init_script(WATCH)
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    yield p
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def terminal(page: Any) -> Any:
    """The rows xterm.js draws (its DOM renderer): what the operator reads."""
    return page.locator("#term-box .xterm-rows")


@requires_tmux
def test_an_operator_spawns_watches_is_notified_and_answers(world: HostWorld, page: Any) -> None:
    page.goto(f"{world.relay.url}/#orchestrators")
    expect(page.locator("#stream")).to_have_attribute("data-state", "live")
    page.get_by_role("button", name="Notify me").click()
    expect(page.locator("#notify-btn")).to_have_attribute("aria-pressed", "true")

    # Spawn from the dialog, in a worktree of the repository at proj/app.
    page.get_by_role("button", name="Spawn agent…").click()
    dialog = page.locator("#spawn-dialog")
    dialog.get_by_label("Working directory").fill(str(world.base / "proj" / "app"))
    dialog.get_by_label("Label").fill("asker")
    dialog.get_by_label("Run it in a new git worktree").check()
    dialog.get_by_label("Branch").fill("feature/ask")
    dialog.get_by_label("Initial prompt").fill("ask")
    dialog.get_by_role("button", name="Spawn", exact=True).click()
    expect(dialog).to_be_hidden()

    # Its name in the host's card opens its view: the terminal shows what it printed.
    page.locator("#orch-list").get_by_role("link", name="asker").click()
    expect(page.locator("#term-status")).to_have_attribute("data-state", "live")
    expect(terminal(page)).to_contain_text("round 1: about to delete 3 files")
    expect(terminal(page)).to_contain_text("Proceed? [y/N]")
    facts = page.locator("#agent-facts")
    expect(facts.locator("code.branch")).to_have_text("feature/ask")
    expect(facts.locator("code.worktree")).to_contain_text(".relay/worktrees/")

    # Quiet on a question: the badge, the title and one notification say so.
    badge = page.locator("#nav-input-count")
    expect(badge).to_have_text("1")
    expect(page).to_have_title(re.compile(r"^\(1\) relay · asker$"))
    expect(page.locator("#agent-attention")).to_contain_text("Waiting for input")
    notices = wait_for(lambda: page.evaluate("window.__notices"), 10, "a notification")
    assert notices[0]["title"] == "asker needs input", notices
    assert "Proceed? [y/N]" in notices[0]["body"], notices

    # Answered from the queue with one click: typed into the pane, echoed back.
    page.locator(".tabs").get_by_role("link", name=re.compile("^Needs input")).click()
    item = page.locator("#inbox-list li.inbox-item")
    expect(item).to_have_count(1)
    expect(item.locator("pre.excerpt")).to_contain_text("Proceed? [y/N]")
    item.get_by_role("button", name="Answer y to asker").click()
    # The stub asks again (round 2): a new question, after the first one cleared.
    expect(item.locator("pre.excerpt")).to_contain_text("round 2")
    shown = page.evaluate("window.__badge")  # every count the badge showed, in order
    assert shown[:4] == ["0", "1", "0", "1"], shown
    assert len(page.evaluate("window.__notices")) == 2  # one per question

    # Answered from the agent view's input box this time.
    page.go_back()
    expect(terminal(page)).to_contain_text('stub: you said "y\\n"')
    form = page.locator("#input-form")
    form.get_by_label("Type to the agent").fill("no, thanks")
    form.get_by_role("button", name="Send", exact=True).click()
    sent = page.locator("#input-list li").first
    expect(sent.locator(".badge.status")).to_have_text("done")
    expect(sent).to_contain_text("“no, thanks” ⏎")
    expect(terminal(page)).to_contain_text('stub: you said "no, thanks\\n"')
    expect(page.locator("#input-list li")).to_have_count(2)


def _fake_host(api: Api, oid: str, agents: list[str]) -> Api:
    """Register ``oid`` reporting ``agents``, as a host daemon would; returns its client."""
    token = api.register(oid, hostname=f"{oid}.lan", providers=("claude",))["orchestratorToken"]
    host = Api(api.base_url, token)
    host.ok("PATCH", f"/api/orchestrators/{oid}/agents", {"agents": [
        {"agentId": aid, "provider": "claude", "label": aid, "tmuxSession": f"relay-{aid}",
         "cwd": "/srv/work"}
        for aid in agents
    ]})
    return host


def _asks(host: Api, oid: str, aid: str, question: str) -> None:
    """The host reports that ``aid`` waits for an answer to ``question``."""
    host.ok("POST", f"/api/orchestrators/{oid}/agents/{aid}/attention", {
        "attention": "input", "reason": "no output for 30s; matches Proceed\\?",
        "excerpt": f"about to {question}\nProceed? [y/N]",
    })


def test_the_queue_lists_the_oldest_question_first_and_sends_an_answer(dashboard: Any, api: Api) -> None:
    oid = f"q-{uuid.uuid4().hex[:6]}"
    dashboard.page.context.add_init_script(WATCH)
    page = dashboard.open("inbox")
    host = _fake_host(api, oid, ["first", "second", "quiet"])
    _asks(host, oid, "first", "delete 3 files")
    host.ok("POST", f"/api/orchestrators/{oid}/agents/quiet/attention",
            {"attention": "idle", "reason": "no output for 30s"})  # idle: not a question
    items = page.locator("#inbox-list li.inbox-item")
    expect(items).to_have_count(1)
    page.get_by_role("button", name="Notify me").click()  # only now: nothing was notified before
    expect(page.locator("#notify-btn")).to_have_attribute("aria-pressed", "true")
    _asks(host, oid, "second", "push to main")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_contain_text("first")
    expect(items.nth(1)).to_contain_text("push to main")
    expect(page.locator("#nav-input-count")).to_have_text("2")
    expect(page).to_have_title("(2) relay · needs input")
    notices = page.evaluate("window.__notices")
    assert [n["title"] for n in notices] == ["second needs input"], notices

    # This host runs nothing, so the answer stays pending: the item says what was sent,
    # and the command holds the text exactly as typed (spaces and all).
    items.nth(1).get_by_label("Answer for second").fill(" n, use a branch ")
    items.nth(1).get_by_role("button", name="Send").click()
    expect(items.nth(1).locator(".answer-sent")).to_contain_text("pending")
    expect(items.nth(1).locator(".answer-sent")).to_contain_text("n, use a branch")
    command = next(c for c in api.ok("GET", f"/api/orchestrators/{oid}/commands") if c["kind"] == "input")
    assert (command["agentId"], command["text"], command["enter"]) == ("second", " n, use a branch ", True)


def test_an_agent_that_is_not_managed_says_so(dashboard: Any) -> None:
    page = dashboard.open("agent/nowhere/nobody")
    expect(page.locator("#agent-gone")).to_have_text("There is no orchestrator nowhere now.")
    expect(page.locator("#term-status")).to_have_attribute("data-state", "error")
    expect(page.locator("#term-status")).to_contain_text("no orchestrator 'nowhere'")
    expect(page.locator("#input-send")).to_be_disabled()
