"""Needs-input on the host: which agents wait for a person, told to the relay (ADR 0032).

Two ways to know, one state per agent:

- **The provider's hook.** Claude Code runs a ``Notification`` hook when it
  asks for permission or sits idle at its prompt; the hook runs
  ``relay host notify``, which drops one small JSON file into this daemon's
  notify folder (``RELAY_NOTIFY_DIR``, beside the state file). The agent never
  holds a token: the daemon reads the folder and speaks to the relay.
- **The generic rule**, for any provider: the pane printed nothing for
  ``--idle-after`` seconds while its program lives (tmux's
  ``window_activity``, one ``list-panes`` for every agent), and its last lines
  match one of the provider's ``--input-pattern``s: it asks (``input``);
  quiet without a match: ``idle``.

An agent stops waiting when its output moves on (its last lines differ from
those it was waiting with), when the operator's input is typed into it (the
relay records that itself when the command is done, ADR 0033), or when a hook
says it resumed (``UserPromptSubmit``). The relay is told only changes, and
its answer to a repeat is a no-op, so retries and restarts are harmless.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from relay.host.client import RelayClientError, RelayRejectedError, RelayUnavailableError
from relay.host.context import HostContext
from relay.host.notice import (
    KEEP,
    MAX_EXCERPT,
    MAX_REASON,
    MAX_SESSION_ID,
    clean,
    clip_end,
    printable,
    read_notices,
)
from relay.host.registration import Registration
from relay.host.state import ManagedAgent
from relay.host.tmux import PaneActivity, TmuxError

log = logging.getLogger("relay.host")

TICK = 1.0  # seconds between looks (at most; --check-every when it is shorter)
EXCERPT_LINES = 12  # the pane's last lines sent with a report: what the question was
MATCH_LINES = 5  # the last lines a pattern is looked for in: the question, not history

# -- the watcher ---------------------------------------------------------------------------------

Want = tuple[str | None, str]  # (attention, reason)


def same(a: Want | None, b: Want | None) -> bool:
    """Whether the relay would record nothing going from ``a`` to ``b`` (its idempotency rule)."""
    if a is None or b is None:
        return False
    return a[0] == b[0] and (a[0] is None or a[1] == b[1])


@dataclass
class Tracker:
    """One agent: what it looks like now, and what the relay was last told."""

    want: Want = (None, "")
    excerpt: str = ""  # the last lines it waits with (compared to see output move on)
    reported: Want | None = (None, "")  # None: unknown, tell it
    activity: int | None = None  # window_activity when ``excerpt`` was taken (None: look again)
    quiet_from: float = 0.0  # no quiet before this (epoch s): just answered


class AttentionWatcher:
    """Keeps each managed agent's attention true to its pane and its hooks, and the relay told."""

    def __init__(self, ctx: HostContext, registration: Registration) -> None:
        self.ctx = ctx
        self.registration = registration
        self.trackers: dict[str, Tracker] = {}
        self._generation = -1
        # Set by the daemon: PATCH the agent list at once when a hook told a session id.
        self.report_agents: Any = None

    @property
    def every(self) -> float:
        return min(self.ctx.config.check_every, TICK)

    async def run(self) -> None:
        """Look every second (or --check-every when shorter) until the daemon stops."""
        ctx = self.ctx
        ctx.notify_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        while not ctx.stopping.is_set():
            await ctx.sleep(self.every)
            await self.registration.ready.wait()
            await self.tick()

    def answered(self, agent_id: str) -> None:
        """Input was typed into it: it waits for nothing now, and the relay records that
        itself when the command is done (ADR 0033), so there is nothing to tell it.
        Called under the command lock, so no look is halfway through meanwhile."""
        t = self.trackers.setdefault(agent_id, Tracker())
        t.want = (None, "input sent")
        t.reported = (None, "")
        t.excerpt, t.activity = "", None
        t.quiet_from = time.time()

    async def tick(self) -> None:
        """One look: hook notices, every pane's activity, then what changed to the relay."""
        ctx = self.ctx
        if self.registration.generation != self._generation:
            self._adopt_relay_view()
        # Under the command lock: an input command typed into an agent is then either
        # before this look (``answered``) or after it, never halfway through it.
        async with ctx.lock:
            sessions_told = self._apply_notices(read_notices(ctx.notify_dir))
            agents = list(ctx.state.agents)
            try:
                panes = await ctx.tmux.activity()
            except TmuxError as exc:
                log.warning("cannot look at the agents' panes: %s", exc)
                panes = None
            if panes is not None:
                now = time.time()
                for agent in agents:
                    await self._look(agent, panes.get(agent.tmux_session), now)
        managed = {a.agent_id for a in agents}
        for gone in [aid for aid in self.trackers if aid not in managed]:
            del self.trackers[gone]
        if sessions_told and self.report_agents is not None:
            await self.report_agents()
        await self._tell(managed)

    def _adopt_relay_view(self) -> None:
        """After a (re)registration: start from what the relay holds, so that a restarted
        daemon neither repeats a fact nor leaves a stale one standing."""
        self._generation = self.registration.generation
        relay = self.registration.relay_agents
        for agent in self.ctx.state.agents:
            m = relay.get(agent.agent_id) or {}
            t = self.trackers.setdefault(agent.agent_id, Tracker())
            held = m.get("attention")
            if held in ("input", "idle"):
                t.reported = (held, str(m.get("attentionReason") or ""))
                if t.want[0] is None and t.activity is None:
                    # Still waiting if its last lines are those it waited with (looked at next).
                    t.want, t.excerpt = t.reported, str(m.get("attentionExcerpt") or "")
            else:
                t.reported = (None, "")

    def _apply_notices(self, notices: list[dict[str, Any]]) -> bool:
        """Hook notices into trackers (the last one per agent wins); True when a session id changed."""
        changed = False
        for n in notices:
            agent = self.ctx.state.agent(str(n["agentId"]))
            session = n.get("tmuxSession")
            if agent is None or (session is not None and session != agent.tmux_session):
                log.info("ignored a hook notice about %r (not a managed agent here)", n.get("agentId"))
                continue
            sid = n.get("sessionId")
            if isinstance(sid, str) and sid and len(sid) <= MAX_SESSION_ID and sid != agent.session_id:
                agent.session_id = printable(sid)
                changed = True
            attention = n.get("attention", KEEP)
            if attention == KEEP or attention not in ("input", "idle", None):
                continue
            t = self.trackers.setdefault(agent.agent_id, Tracker())
            t.want = (attention, clean(str(n.get("reason") or ""), MAX_REASON))
            t.excerpt, t.activity = "", None  # the lines it waits with: taken at the next look
            if attention is None:
                t.quiet_from = time.time()
            log.info("hook: %s %s (%s)", agent.agent_id,
                     f"waits ({attention})" if attention else "resumed", t.want[1])
        if changed:
            self.ctx.agents_dirty = True
            self.ctx.save()
        return changed

    async def _excerpt(self, agent: ManagedAgent) -> tuple[str, list[str]]:
        shown = await self.ctx.tmux.last_lines(agent.tmux_session, EXCERPT_LINES)
        lines = [printable(line) for line in shown]
        return clip_end("\n".join(lines), MAX_EXCERPT), lines

    async def _look(self, agent: ManagedAgent, pane: PaneActivity | None, now: float) -> None:
        t = self.trackers.setdefault(agent.agent_id, Tracker())
        if pane is None or pane.dead:
            if t.want[0] is not None:
                t.want = (None, "the agent is not running")
            return
        if t.want[0] is not None:
            if t.activity is None:
                # Just raised (a hook) or adopted (a restart): take the lines it waits with,
                # unless an adopted wait's lines are gone already.
                excerpt, _ = await self._excerpt(agent)
                if t.excerpt and excerpt != t.excerpt:
                    t.want, t.excerpt = (None, "output"), ""
                else:
                    t.excerpt, t.activity = excerpt, pane.activity
            elif pane.activity != t.activity:
                excerpt, _ = await self._excerpt(agent)
                if excerpt != t.excerpt:
                    t.want, t.excerpt, t.activity = (None, "output"), "", None
                else:
                    t.activity = pane.activity  # redrawn, nothing new
            return
        idle_after = self.ctx.config.idle_after
        # tmux keeps whole seconds: output at 10.9 s reads as 10, so quiet counts from the
        # end of that second (never less quiet than --idle-after, up to 1 s more).
        if idle_after <= 0 or now - max(pane.activity + 1, t.quiet_from) < idle_after:
            return
        excerpt, lines = await self._excerpt(agent)
        tail = "\n".join(lines[-MATCH_LINES:])
        quiet = f"no output for {idle_after:g}s"
        pattern = next((p for p in self.ctx.config.patterns_for(agent.provider) if p.search(tail)), None)
        if pattern is not None:
            t.want = ("input", clip_end(f"{quiet}; matches {pattern.pattern}", MAX_REASON))
        else:
            t.want = ("idle", quiet)
        t.excerpt, t.activity = excerpt, pane.activity

    async def _tell(self, managed: set[str]) -> None:
        """Report each agent whose attention differs from what the relay was last told."""
        client = self.ctx.client
        for aid, t in self.trackers.items():
            if aid not in managed or same(t.reported, t.want):
                continue
            attention, reason = t.want
            body = {"attention": attention, "reason": reason,
                    "excerpt": t.excerpt if attention is not None else ""}
            try:
                await self.registration.call(lambda a=aid, b=body: client.report_attention(a, b))
            except RelayRejectedError as exc:
                if exc.status == 404:  # not on the relay's list yet: the next look tries again
                    log.debug("attention of %s not taken yet: %s", aid, exc)
                    continue
                # The relay will never take this one; don't ask again until it changes.
                log.error("the relay refused the attention of %s (%s)", aid, exc)
                t.reported = t.want
                continue
            except (RelayUnavailableError, RelayClientError) as exc:
                log.warning("could not report the attention of %s yet: %s", aid, exc)
                return
            t.reported = t.want
            log.info("told the relay: %s %s", aid,
                     f"waits for {attention} ({reason})" if attention else f"resumed ({reason})")
