"""The host daemon's loops: register, heartbeat, follow commands, watch agents.

Exactly-once, as far as a crash allows: a command is marked *started* in the
state file before anything is done, and *handled* (with its result queued in
an outbox) right after. A daemon that was killed in between does not run the
command again; on start it looks for the tmux session that the command would
have made and reports ``done`` if it is there, ``failed`` if not. Results are
posted from the outbox until the relay accepts them (a 409 means it already
has one), so a network loss never loses or repeats a result.

The command-follow loop is one piece (``follow_commands``): it prefers the
SSE stream, resuming from the last handled log position, reconciles with the
pending list each time it (re)connects, and falls back to polling that list
when the relay has no stream.

A spawn is settled only after ``start_grace``: a provider that exits in that
time (a missing key, a bad flag, a refused cwd) makes the spawn ``failed``
with its exit status and the last lines it printed, instead of a ``done``
for an agent that is already gone. The wait runs beside the other commands,
not under the command lock, and a daemon killed during it settles the
command from the tmux session on its next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import time
import unicodedata
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from relay import __version__
from relay.host.client import (
    NotRegisteredError,
    RelayClient,
    RelayClientError,
    RelayRejectedError,
    RelayUnavailableError,
    ResumeRefusedError,
    StreamUnsupportedError,
)
from relay.host.config import (
    APPROVAL_MODES,
    HostConfig,
    HostConfigError,
    as_registered,
    list_dirs,
    resolve_inside,
)
from relay.host.crashloop import CrashLoopPolicy, ExitSeen
from relay.host.lifecycle import (
    LifecycleConfig,
    deadline_passed,
    heartbeat_interval,
    load_report,
)
from relay.host.state import HostState, ManagedAgent, StateFile
from relay.host.tmux import PaneState, Tmux, TmuxError, session_name

log = logging.getLogger("relay.host")

STATUS_WAIT = 2.0  # seconds to wait for tmux to report how a dead pane's program ended
MAX_RESULT_ERROR = 3900  # the relay takes at most 4000 characters of ``error``
LAST_LINES = 20


def now_ms() -> int:
    """Epoch milliseconds, the relay's unit for times on the wire."""
    return int(time.time() * 1000)


class CommandFailedError(Exception):
    """Raised while carrying out a command; the message is the reported reason."""


class Backoff:
    """Exponential backoff with jitter, so many hosts don't retry in lockstep."""

    def __init__(self, cap: float, base: float = 0.25) -> None:
        self.cap = cap
        self.base = base
        self.attempt = 0

    def next_delay(self) -> float:
        """The delay before the next try: half to all of ``base * 2**attempt``, capped."""
        delay = min(self.cap, self.base * (2 ** min(self.attempt, 20)))
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        """Start over after a success."""
        self.attempt = 0


def registration_payload(
    config: HostConfig, lifecycle: LifecycleConfig | None = None
) -> dict[str, Any]:
    """What ``POST /api/orchestrators`` gets: names only, never env values."""
    dirs, truncated = list_dirs(config.base_dir, config.max_dirs)
    return {
        **(lifecycle.registration_fields() if lifecycle else {}),
        "id": config.orchestrator_id,
        "hostname": config.hostname,
        "baseDir": str(config.base_dir),
        "providers": sorted(config.providers),
        "envKeys": config.env_keys,
        "meta": {
            "dirs": dirs,
            "dirsTruncated": truncated,
            "daemon": "relay host",
            "version": __version__,
            "pid": os.getpid(),
        },
    }


class HostDaemon:
    """One host's orchestrator: owns the state file, the tmux socket and the loops."""

    def __init__(
        self,
        config: HostConfig,
        tmux: Tmux | None = None,
        lifecycle: LifecycleConfig | None = None,
    ) -> None:
        self.config = config
        self.lifecycle = lifecycle or LifecycleConfig()
        self.crash = CrashLoopPolicy(self.lifecycle.restart_max, self.lifecycle.restart_window)
        # The relay's pace once registered (heartbeatIntervalMs); ours until then.
        self.heartbeat_every = config.heartbeat_every
        self.tmux = tmux or Tmux(config.tmux_socket)
        self.state_file = StateFile(config.state_path)
        self.state: HostState = HostState()
        self.client = RelayClient(config.relay_url, config.orchestrator_id, config.admin_token)
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._registered = asyncio.Event()
        self._agents_dirty = True
        self._last_dirs: list[str] | None = None
        self._register_lock = asyncio.Lock()
        self._generation = 0  # counts registrations, so concurrent 404s register once
        self._settling: set[asyncio.Task[None]] = set()
        self._in_grace: set[str] = set()  # sessions whose spawn is not settled yet
        self._no_status: dict[str, float] = {}  # dead panes without an exit status: first seen

    # ----------------------------------------------------------------- running

    async def run(self) -> None:
        """Run until ``stop()``; agents in tmux keep running after the daemon exits."""
        self.state = self.state_file.load()
        if self.state.orchestrator_id and self.state.orchestrator_id != self.config.orchestrator_id:
            raise HostConfigError(
                f"state file {self.state_file.path} belongs to orchestrator "
                f"{self.state.orchestrator_id!r}; use another --state for "
                f"{self.config.orchestrator_id!r}"
            )
        if self.state.relay_url and self.state.relay_url != self.config.relay_url:
            log.warning(
                "relay URL changed from %s to %s; log positions of the old relay are dropped",
                self.state.relay_url, self.config.relay_url,
            )
            self.state.last_event_id = None
        self.state.orchestrator_id = self.config.orchestrator_id
        self.state.relay_url = self.config.relay_url
        self.client.orchestrator_token = self.state.orchestrator_token
        self._save()
        log.info(
            "host %s (%s) for %s: base dir %s, providers %s, tmux socket %s, state %s",
            self.config.orchestrator_id, self.config.hostname, self.config.relay_url,
            self.config.base_dir, ", ".join(sorted(self.config.providers)),
            self.config.tmux_socket or "(default)", self.state_file.path,
        )
        async with self.client:
            with contextlib.suppress(TmuxError):
                removed = await self.tmux.scrub_global_env()
                if removed:
                    log.warning(
                        "the tmux server on socket %s was started with a wider environment; "
                        "removed %s from its global environment. Its own process still holds "
                        "them: once its agents are done, run tmux -L %s kill-server",
                        self.config.tmux_socket or "(default)", ", ".join(sorted(removed)),
                        self.config.tmux_socket or "default",
                    )
            # Settle interrupted commands first: a spawn whose provider died
            # meanwhile still has its pane, and so its exit status and output.
            await self._recover_started()
            await self._refresh_agents()
            tasks = [
                asyncio.create_task(self._guard("register", self._register_until_done)),
                asyncio.create_task(self._guard("heartbeat", self.heartbeat_loop)),
                asyncio.create_task(self._guard("commands", self.follow_commands)),
                asyncio.create_task(self._guard("watch", self.watch_agents)),
            ]
            try:
                await self._stop.wait()
                # Let a command that is being carried out finish, so a plain
                # stop never leaves one half-done for the next start to settle.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._lock.acquire(), timeout=10)
            finally:
                # A spawn still in its grace period stays "started" in the
                # state file; the next start settles it from its tmux session.
                for task in [*tasks, *self._settling]:
                    task.cancel()
                await asyncio.gather(*self._settling, return_exceptions=True)
                await asyncio.gather(*tasks, return_exceptions=True)
                self._save()
        log.info("host daemon stopped; %d managed agent(s) keep running", len(self.state.agents))

    def stop(self) -> None:
        """Ask ``run()`` to return (signal handlers call this)."""
        self._stop.set()

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Restart a loop that crashed on a bug, after logging it, instead of dying."""
        backoff = Backoff(self.config.max_backoff)
        while not self._stop.is_set():
            try:
                await loop()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s loop failed; restarting it", name)
                await self._sleep(backoff.next_delay())

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the daemon is asked to stop."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    def _save(self) -> None:
        self.state.orchestrator_token = self.client.orchestrator_token
        self.state_file.save(self.state)

    # ------------------------------------------------------------ registration

    async def _register_until_done(self) -> None:
        await self.ensure_registered()

    async def ensure_registered(self, force: bool = False, seen: int | None = None) -> None:
        """Register (again when ``force``), retrying with backoff until it works.

        ``seen`` is the registration generation a failed call ran under: when
        another task has registered since, there is nothing left to do.
        """
        async with self._register_lock:
            if self._registered.is_set() and not force:
                return
            if seen is not None and seen != self._generation:
                return
            self._registered.clear()
            backoff = Backoff(self.config.max_backoff)
            while not self._stop.is_set():
                payload = registration_payload(self.config, self.lifecycle)
                try:
                    answer = await self.client.register(payload)
                except RelayRejectedError as exc:
                    log.error("the relay refused the registration (%s); retrying", exc)
                except RelayUnavailableError as exc:
                    log.warning("cannot reach the relay to register: %s", exc)
                else:
                    self._last_dirs = payload["meta"]["dirs"]
                    self._follow_pace(answer)
                    self._generation += 1
                    self._save()
                    log.info(
                        "registered as %s with %d dir(s) listed, env keys: %s",
                        self.config.orchestrator_id, len(payload["meta"]["dirs"]),
                        ", ".join(payload["envKeys"]) or "(none)",
                    )
                    self._agents_dirty = True
                    self._registered.set()
                    break
                await self._sleep(backoff.next_delay())
        if self._registered.is_set():
            # Outside the lock: these calls may themselves find us forgotten.
            await self._report_agents()
            await self.flush_outbox()

    def _follow_pace(self, answer: Any) -> None:
        """Beat at the relay's ``heartbeatIntervalMs``; our --stale-after / 3 if it sends none."""
        pace = heartbeat_interval(answer, self.config.heartbeat_every)
        if pace != self.heartbeat_every:
            log.info("heartbeat every %.1fs, as the relay asks", pace)
        self.heartbeat_every = pace

    async def _registered_call(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run a call that needs our registration, registering again on 404/401/403."""
        await self._registered.wait()
        generation = self._generation
        try:
            return await call()
        except NotRegisteredError as exc:
            log.warning("the relay does not know this host any more (%s); registering again", exc)
            await self.ensure_registered(force=True, seen=generation)
            return await call()

    # --------------------------------------------------------------- heartbeat

    async def heartbeat_loop(self) -> None:
        """Beat every third of stale-after; re-register when forgotten or dirs change."""
        backoff = Backoff(self.config.max_backoff)
        while not self._stop.is_set():
            await self._registered.wait()
            try:
                load = load_report(self.crash.running(self.state.agents))
                await self._registered_call(lambda load=load: self.client.heartbeat(load))
                dirs, _ = list_dirs(self.config.base_dir, self.config.max_dirs)
                if dirs != self._last_dirs:
                    log.info("base dir listing changed; registering again to publish it")
                    await self.ensure_registered(force=True)
                if self._agents_dirty:
                    await self._report_agents()
                if self.state.outbox:
                    await self.flush_outbox()
            except RelayClientError as exc:
                delay = min(backoff.next_delay(), self.heartbeat_every)
                log.warning("heartbeat failed: %s; next try in %.1fs", exc, delay)
                await self._sleep(delay)
                continue
            backoff.reset()
            await self._sleep(self.heartbeat_every)

    # ---------------------------------------------------------------- commands

    async def follow_commands(self) -> None:
        """Follow our commands: SSE with resume, reconcile on connect, poll as fallback."""
        backoff = Backoff(self.config.max_backoff)
        polls_before_stream_retry = 0
        while not self._stop.is_set():
            await self._registered.wait()
            try:
                if polls_before_stream_retry > 0:
                    polls_before_stream_retry -= 1
                    await self.reconcile()
                    backoff.reset()
                    await self._sleep(self.config.poll_every)
                    continue
                await self._follow_stream()
                # The relay closed the stream cleanly (e.g. it is stopping):
                # reconnect soon, but never in a hot loop.
                backoff.reset()
                await self._sleep(backoff.next_delay())
            except StreamUnsupportedError:
                log.warning("the relay has no event stream; polling pending commands instead")
                polls_before_stream_retry = 30
            except ResumeRefusedError as exc:
                # The relay's log is not the one we followed (reset, restored):
                # follow from now; the pending list read on connect covers the gap.
                log.warning("the relay cannot resume from position %s (%s); following from now",
                            self.state.last_event_id, exc)
                self.state.last_event_id = None
                self._save()
            except NotRegisteredError as exc:
                log.warning("event stream refused (%s); registering again", exc)
                await self.ensure_registered(force=True, seen=self._generation)
            except RelayClientError as exc:
                delay = backoff.next_delay()
                if isinstance(exc, RelayUnavailableError) and exc.retry_after:
                    delay = max(delay, exc.retry_after)
                log.warning("lost the command stream: %s; reconnecting in %.1fs", exc, delay)
                await self._sleep(delay)

    async def _follow_stream(self) -> None:
        async with self.client.event_stream(self.state.last_event_id) as events:
            log.info(
                "following commands on the event stream from position %s",
                self.state.last_event_id or "(tail)",
            )
            # Reconcile once the stream is open: anything requested after the
            # pending list was read arrives on the stream, so nothing is missed.
            await self.reconcile()
            async for event in events:
                await self._on_event(event)

    async def _on_event(self, event: Any) -> None:
        data = event.json()
        if event.event == "orchestrator.command" and isinstance(data, dict):
            if data.get("orchestratorId") in (None, self.config.orchestrator_id):
                await self.handle_command(data)
        elif (
            event.event == "orchestrator.removed"
            and isinstance(data, dict)
            and data.get("id") == self.config.orchestrator_id
        ):
            log.warning("this host was removed from the relay; registering again")
            await self.ensure_registered(force=True, seen=self._generation)
        if event.id:
            self.state.last_event_id = event.id
            # Status events come with every heartbeat; replaying a few of them
            # after a crash is harmless, so only command events cost an fsync.
            if event.event == "orchestrator.command":
                self._save()

    async def reconcile(self) -> None:
        """Carry out every pending command the relay lists that we have not handled."""
        commands = await self._registered_call(self.client.pending_commands)
        for command in commands:
            await self.handle_command(command)
        await self.flush_outbox()

    async def handle_command(self, command: dict[str, Any]) -> None:
        """Carry out one command at most once, then queue and post its result."""
        command_id = str(command.get("id") or "")
        if not command_id or command.get("status", "pending") != "pending":
            return
        async with self._lock:
            if self.state.is_handled(command_id):
                return
            if not await self._may_start(command):
                return
            self.state.mark_started(command)
            self._save()
            kind = command.get("kind")
            log.info("command %s: %s %s", command_id, kind, _describe(command))
            result: dict[str, Any] | None
            try:
                result = await self._execute(command)
            except CommandFailedError as exc:
                result = {"status": "failed", "error": str(exc)}
            except Exception as exc:
                log.exception("command %s crashed", command_id)
                result = {"status": "failed", "error": f"the host daemon hit an error: {exc}"}
            if result is not None:
                self._finish(command_id, result)
        if self._agents_dirty:
            await self._report_agents()
        await self.flush_outbox()

    async def _may_start(self, command: dict[str, Any]) -> bool:
        """Never start a command past its deadline, nor before the relay marked it running.

        A command the relay will expire (or already did) is marked handled with
        no result: a result would only be refused (409). When the relay cannot
        be reached the command stays unhandled, so the next reconcile tries again.
        """
        command_id = str(command["id"])
        if deadline_passed(command, now_ms()):
            log.warning("command %s is past its deadline (%s); not starting it, the relay "
                        "expires it", command_id, command.get("deadlineAt"))
            self.state.skip(command_id)
            self._save()
            return False
        if "deadlineAt" not in command:
            return True  # an older relay: no deadlines, no progress route
        try:
            await self._registered_call(lambda: self.client.start_command(command_id))
        except RelayRejectedError as exc:
            log.warning("the relay will not let command %s start (%s); not starting it",
                        command_id, exc)
            self.state.skip(command_id)
            self._save()
            return False
        except RelayClientError as exc:
            log.warning("cannot mark command %s running yet (%s); it waits for the next "
                        "reconcile", command_id, exc)
            return False
        return True

    def _finish(self, command_id: str, result: dict[str, Any]) -> None:
        """Mark a command handled with its result queued (call under ``_lock``)."""
        if result["status"] == "failed":
            log.warning("command %s failed: %s", command_id, result["error"])
        else:
            log.info("command %s done", command_id)
        self.state.finish(command_id, result)
        self._save()

    async def flush_outbox(self) -> None:
        """Post queued results; keep the ones the relay could not take yet."""
        for command_id, result in list(self.state.outbox.items()):
            try:
                await self._registered_call(
                    lambda c=command_id, r=result: self.client.post_result(c, r)
                )
            except RelayRejectedError as exc:
                log.error("the relay refused the result of %s (%s); dropping it", command_id, exc)
            except RelayClientError as exc:
                log.warning("could not post the result of %s yet: %s", command_id, exc)
                return
            self.state.outbox.pop(command_id, None)
            self._save()

    async def _execute(self, command: dict[str, Any]) -> dict[str, Any] | None:
        """Carry out a command; ``None`` when its result comes later (a spawn's grace)."""
        kind = command.get("kind")
        if kind == "spawn":
            agent = await self._spawn(command)
            if self.config.start_grace <= 0:
                return {"status": "done", "agentId": agent.agent_id}
            self._in_grace.add(agent.tmux_session)
            task = asyncio.create_task(self._settle_spawn(str(command["id"]), agent))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
            return None
        if kind in ("restart", "shutdown"):
            agent_id = command.get("agentId")
            targets = self._targets(agent_id)
            for agent in targets:
                if kind == "restart":
                    self.crash.reset(agent)  # an operator's restart starts the count afresh
                    await self._restart(agent)
                else:
                    await self._shutdown(agent)
            result: dict[str, Any] = {"status": "done"}
            if agent_id:
                result["agentId"] = agent_id
            return result
        raise CommandFailedError(f"unknown command kind {kind!r}")

    def _targets(self, agent_id: str | None) -> list[ManagedAgent]:
        if not agent_id:
            return list(self.state.agents)
        agent = self.state.agent(agent_id)
        if agent is None:
            raise CommandFailedError(f"no managed agent {agent_id!r} runs on this host")
        return [agent]

    # ------------------------------------------------------------------ agents

    def _argv(self, provider: str, mode: str, prompt: str | None) -> list[str]:
        """The provider's argv for ``mode``, the prompt last and never an option.

        The approval flags are the provider's own (ADR 0016). The prompt goes
        after ``--``, so ``--dangerously-skip-permissions`` as a prompt is a
        prompt, never a flag.
        """
        config = self.config.providers.get(provider)
        if config is None:
            configured = ", ".join(sorted(self.config.providers))
            raise CommandFailedError(
                f"provider {provider!r} is not configured on this host (configured: {configured})"
            )
        try:
            flags = config.mode_flags(provider, mode)
        except HostConfigError as exc:
            raise CommandFailedError(str(exc)) from exc
        argv = [*config.argv, *flags]
        if shutil.which(argv[0], path=self.config.agent_base_env.get("PATH")) is None:
            raise CommandFailedError(f"provider {provider!r}: command {argv[0]!r} not found")
        if prompt:
            argv += ["--", prompt]  # one argv element, after the end of options
        return argv

    def _env(self, agent: ManagedAgent, command_id: str) -> dict[str, str]:
        env = dict(self.config.agent_base_env)
        env.update(self.config.provider_env.get(agent.provider, {}))
        env.update(self.config.env)
        env.update({
            "RELAY_URL": self.config.relay_url,
            "RELAY_AGENT_ID": agent.agent_id,
            "RELAY_ORCHESTRATOR_ID": self.config.orchestrator_id,
            "RELAY_APPROVAL_MODE": agent.approval_mode,
            "RELAY_COMMAND_ID": command_id,
            "RELAY_TMUX_SESSION": agent.tmux_session,
        })
        if agent.label:
            env["RELAY_AGENT_LABEL"] = agent.label
        return env

    @property
    def _spec_dir(self) -> Path:
        return self.state_file.path.parent / "launch"

    @property
    def _base_real(self) -> Path:
        return Path(os.path.realpath(self.config.base_dir))

    async def _settle_spawn(self, command_id: str, agent: ManagedAgent) -> None:
        """After the grace period, report the spawn ``done``, or ``failed`` if it exited."""
        try:
            await asyncio.sleep(self.config.start_grace)
            async with self._lock:
                await self._settle_locked(command_id, agent)
        finally:
            self._in_grace.discard(agent.tmux_session)
        if self._agents_dirty:
            await self._report_agents()
        await self.flush_outbox()

    async def _settle_locked(self, command_id: str, agent: ManagedAgent) -> None:
        if command_id not in self.state.started:
            return  # settled already (a recovery after a restart)
        try:
            pane = (await self.tmux.panes()).get(agent.tmux_session)
        except TmuxError as exc:
            log.warning("cannot look at tmux session %s: %s", agent.tmux_session, exc)
            pane = PaneState(pid=agent.pid, dead=False, status=None)
        managed = self.state.agent(agent.agent_id) is not None
        if (pane is not None and not pane.dead) or (pane is None and not managed):
            # Running; or already shut down by a later command: it did start.
            result: dict[str, Any] = {"status": "done", "agentId": agent.agent_id}
        else:
            why = await self._exit_report(agent.provider, agent.tmux_session, pane)
            self._drop(agent)
            result = {"status": "failed", "error": _clip(
                f"the provider exited within {self.config.start_grace:g}s of its start "
                f"and is not running: {why}"
            )}
        self._finish(command_id, result)

    async def _exit_report(self, provider: str, session: str, pane: PaneState | None) -> str:
        """The exit status and last lines of a dead pane; closes its session."""
        pane = await self._with_exit_status(session, pane)
        lines = await self.tmux.last_lines(session, LAST_LINES) if pane is not None else []
        with contextlib.suppress(TmuxError):
            await self.tmux.kill(session)
        if pane is not None and pane.status is not None:
            status = f"status {pane.status}"
        elif pane is not None and pane.signal is not None:
            status = f"signal {pane.signal}"
        else:
            status = "an unknown status"
        text = "\n".join(_printable(line) for line in lines) or "(it printed nothing)"
        return f"{provider!r} ended with {status}; its last lines:\n{text}"

    async def _with_exit_status(self, session: str, pane: PaneState | None) -> PaneState | None:
        """tmux (3.3) may mark a pane dead a moment before it records the exit status:
        look again for up to ~2 s rather than report "an unknown status"."""
        for _ in range(20):
            if pane is None or not pane.dead or pane.status is not None or pane.signal is not None:
                return pane
            await asyncio.sleep(0.1)
            try:
                pane = (await self.tmux.panes()).get(session) or pane
            except TmuxError:
                return pane
        return pane

    def _drop(self, agent: ManagedAgent) -> None:
        before = len(self.state.agents)
        self.state.agents = [a for a in self.state.agents if a.agent_id != agent.agent_id]
        if len(self.state.agents) != before:
            self._agents_dirty = True
            self._save()

    async def _spawn(self, command: dict[str, Any]) -> ManagedAgent:
        command_id = str(command["id"])
        provider = str(command.get("provider") or "")
        prompt = command.get("prompt") or None
        approval = command.get("approvalMode") or "guarded"
        if approval not in APPROVAL_MODES:
            raise CommandFailedError(f"unknown approvalMode {approval!r}")
        argv = self._argv(provider, approval, prompt)
        try:
            cwd = resolve_inside(self.config.base_dir, command.get("cwd"))
        except HostConfigError as exc:
            raise CommandFailedError(str(exc)) from exc
        label = command.get("label") or None
        session = session_name(label, provider, command_id)
        agent = ManagedAgent(
            agent_id=str(command.get("agentId") or session.removeprefix("relay-")),
            provider=provider,
            tmux_session=session,
            cwd=str(cwd),
            approval_mode=approval,
            started_at=now_ms(),
            label=label,
            command_id=command_id,
        )
        if self.state.agent(agent.agent_id) is not None:
            raise CommandFailedError(f"a managed agent {agent.agent_id!r} already runs here")
        try:
            agent.pid = await self.tmux.start(
                session, cwd, argv, self._env(agent, command_id), self._spec_dir,
                base=self._base_real,
            )
        except TmuxError as exc:
            raise CommandFailedError(str(exc)) from exc
        self.state.agents.append(agent)
        self._agents_dirty = True
        self._save()
        log.info("started %s (%s) in tmux session %s, pid %s, cwd %s",
                 agent.agent_id, provider, session, agent.pid, cwd)
        return agent

    async def _restart(self, agent: ManagedAgent) -> None:
        # Restart runs the provider's command again without the original
        # prompt: the first run may have done that work already.
        argv = self._argv(agent.provider, agent.approval_mode, None)
        await self.tmux.kill(agent.tmux_session)
        try:
            cwd = resolve_inside(self.config.base_dir, agent.cwd)
        except HostConfigError as exc:
            raise CommandFailedError(str(exc)) from exc
        try:
            agent.pid = await self.tmux.start(
                agent.tmux_session, cwd, argv,
                self._env(agent, agent.command_id or ""), self._spec_dir,
                base=self._base_real,
            )
        except TmuxError as exc:
            raise CommandFailedError(str(exc)) from exc
        agent.started_at = now_ms()
        self._agents_dirty = True
        self._save()
        log.info("restarted %s in tmux session %s, pid %s",
                 agent.agent_id, agent.tmux_session, agent.pid)

    async def _shutdown(self, agent: ManagedAgent) -> None:
        try:
            await self.tmux.kill(agent.tmux_session)
        except TmuxError as exc:
            raise CommandFailedError(str(exc)) from exc
        self.state.agents = [a for a in self.state.agents if a.agent_id != agent.agent_id]
        self._agents_dirty = True
        self._save()
        log.info("shut down %s (tmux session %s)", agent.agent_id, agent.tmux_session)

    async def _refresh_agents(self) -> bool:
        """Drop agents whose tmux session is gone; True when the list changed."""
        try:
            panes = await self.tmux.panes()
        except TmuxError as exc:
            log.warning("cannot list tmux sessions: %s", exc)
            return False
        # A spawn in its grace period is settled by ``_settle_spawn``, which
        # reports why it ended; don't take its session away first.
        live = {name for name, pane in panes.items() if not pane.dead} | self._in_grace
        # Agents waiting for a restart or given up on have no session by design.
        live |= {a.tmux_session for a in self.state.agents if self.crash.waiting(a)}
        for name, pane in panes.items():
            # tmux marks a pane dead when its terminal closes and fills in the
            # status when it reaps the child, which a loaded machine delays:
            # wait up to STATUS_WAIT seconds for the status.
            if pane.dead and pane.status is None and pane.signal is None:
                first = self._no_status.setdefault(name, time.monotonic())
                if time.monotonic() - first < STATUS_WAIT:
                    live.add(name)
        dead = [a for a in self.state.agents if a.tmux_session not in live]
        if not dead:
            return False
        for agent in dead:
            self._no_status.pop(agent.tmux_session, None)
            pane = panes.get(agent.tmux_session)
            if pane is None:
                log.warning(
                    "agent %s stopped (tmux session %s is gone)",
                    agent.agent_id, agent.tmux_session,
                )
            else:
                log.warning("agent %s stopped: %s", agent.agent_id,
                            await self._exit_report(agent.provider, agent.tmux_session, pane))
                if self._supervise(agent, pane):
                    live.add(agent.tmux_session)
        self.state.agents = [a for a in self.state.agents if a.tmux_session in live]
        self._agents_dirty = True
        self._save()
        return True

    def _supervise(self, agent: ManagedAgent, pane: PaneState) -> bool:
        """A failed exit: schedule a restart or give up (crashloop); True keeps the agent listed."""
        seen = ExitSeen(pane.status, pane.signal, now_ms())
        if not seen.failed:
            return False  # exit 0: it finished its work
        if self.crash.on_exit(agent, seen):
            log.warning("agent %s will be restarted in %.1fs (%d restart(s) in the last %gs)",
                        agent.agent_id, (agent.restart_due or seen.at) / 1000 - seen.at / 1000,
                        len(agent.restarts), self.crash.restart_window)
        else:
            log.error("agent %s is crash-looping: %d restart(s) in %gs, last exit %s; "
                      "not restarting it (a restart command starts it afresh)",
                      agent.agent_id, len(agent.restarts), self.crash.restart_window,
                      agent.last_exit)
        return True

    async def _restart_due(self) -> bool:
        """Restart the agents whose backoff is over; True when any changed (call under ``_lock``)."""
        changed = False
        for agent in list(self.state.agents):
            now = now_ms()
            if not self.crash.due(agent, now):
                continue
            changed = True
            try:
                await self._restart(agent)
            except (CommandFailedError, TmuxError) as exc:
                log.warning("could not restart %s: %s", agent.agent_id, exc)
                self.crash.restarted(agent, now)
                self.crash.on_exit(agent, ExitSeen(None, None, now))
                continue
            self.crash.restarted(agent, now)
        if changed:
            self._agents_dirty = True
            self._save()
        return changed

    async def watch_agents(self) -> None:
        """Notice agents that died, restart failed ones when due, and report the new list."""
        while not self._stop.is_set():
            await self._sleep(self.config.check_every)
            async with self._lock:
                changed = await self._refresh_agents()
                changed = await self._restart_due() or changed
            if changed:
                await self._report_agents()

    async def _report_agents(self) -> None:
        """PATCH the full managed-agent list; on failure the heartbeat loop retries."""
        if not self._registered.is_set():
            return
        self._agents_dirty = False
        agents = [a.to_wire() for a in self.state.agents]
        for wire in agents:
            wire["cwd"] = as_registered(self.config.base_dir, wire["cwd"])
        load = load_report(self.crash.running(self.state.agents))
        try:
            await self._registered_call(lambda: self.client.report_agents(agents))
            # The load a heartbeat carries wins over the list until the next
            # beat; send the new one now, not a heartbeat interval later.
            await self._registered_call(lambda: self.client.heartbeat(load))
        except RelayClientError as exc:
            self._agents_dirty = True
            log.warning("could not report managed agents yet: %s", exc)

    async def _recover_started(self) -> None:
        """Settle commands a killed daemon left half-done, without running them again."""
        for command_id, command in list(self.state.started.items()):
            result: dict[str, Any]
            if command.get("kind") == "spawn":
                session = session_name(
                    command.get("label") or None, str(command.get("provider") or ""), command_id
                )
                try:
                    pane = (await self.tmux.panes()).get(session)
                except TmuxError:
                    pane = None
                alive = pane is not None and not pane.dead
                agent = next((a for a in self.state.agents if a.tmux_session == session), None)
                if alive and agent is None:
                    agent = ManagedAgent(
                        agent_id=str(command.get("agentId") or session.removeprefix("relay-")),
                        provider=str(command.get("provider")),
                        tmux_session=session,
                        cwd=str(command.get("cwd") or self.config.base_dir),
                        approval_mode=str(command.get("approvalMode") or "guarded"),
                        started_at=now_ms(),
                        label=command.get("label") or None,
                        pid=await self.tmux.pane_pid(session),
                        command_id=command_id,
                    )
                    self.state.agents.append(agent)
                    self._agents_dirty = True
                if alive and agent is not None:
                    result = {"status": "done", "agentId": agent.agent_id}
                elif pane is not None:
                    why = await self._exit_report(
                        str(command.get("provider") or ""), session, pane
                    )
                    if agent is not None:
                        self._drop(agent)
                    result = {"status": "failed", "error": _clip(
                        f"the provider exited right after its start: {why}"
                    )}
                else:
                    result = {
                        "status": "failed",
                        "error": "the host daemon stopped while starting this agent; "
                        "not retried so that it never runs twice",
                    }
            else:
                result = {
                    "status": "failed",
                    "error": f"the host daemon stopped during this {command.get('kind')}; "
                    "not retried so that it never runs twice",
                }
            log.warning("command %s was interrupted by a daemon stop: %s", command_id, result)
            self.state.finish(command_id, result)
            self._save()


def _printable(line: str) -> str:
    """A provider's output line without control characters (escapes, bells)."""
    return "".join(
        c if c == "\t" or unicodedata.category(c)[0] != "C" else "\ufffd" for c in line
    )


def _clip(text: str) -> str:
    """Keep the end (the last lines say most) within what the relay accepts."""
    if len(text) <= MAX_RESULT_ERROR:
        return text
    head = text.split("\n", 1)[0][:400]
    tail = text[-(MAX_RESULT_ERROR - len(head) - 8):]
    return f"{head}\n…\n{tail}"


def _describe(command: dict[str, Any]) -> str:
    parts = []
    for key in ("provider", "agentId", "label", "cwd", "approvalMode"):
        if command.get(key):
            parts.append(f"{key}={command[key]}")
    if command.get("prompt"):
        parts.append(f"prompt={len(command['prompt'])} chars")
    return " ".join(parts)
