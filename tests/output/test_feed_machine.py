"""The relay's output feeds as a state machine: viewers join, read, fall behind and leave
while a host pushes screens and output, in any order.

Runs ``OutputHub`` itself (no sockets): the handlers' part is played by the
rules (``drain`` is what a viewer's handler does, ``notice_end`` what it does
when its stream ends), and the host's event stream is a recording stand-in.
The model is the terminal as the host sees it (``truth``): a reset screen
replaces it, output appends to it, and a screen without reset *is* it (the
host captured it just then).

Invariants:

- O1: a viewer that has its screen shows the truth once its queue is written
  (snapshot, then every output after it, in order, once), whether it joined
  first, late from the relay's buffer, or after the buffer was forgotten;
- O2: the last watch frame names exactly the agents that have viewers;
- O3: a viewer still waiting for a screen has been asked for, in a frame
  sent after the agent's last screen arrived (so the host will answer it);
- O4: what the relay keeps per agent, and per viewer, stays within its bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from relay.config import Settings
from relay.http.output import OutputHub, Viewer
from relay.http.sse import Filter
from relay.wire import shapes as w

OID = "h"
AGENTS = ("a1", "a2")
SCREEN_MAX = 400
TEXT = st.text(st.sampled_from("abc\x1b[m\r\n é"), min_size=1, max_size=12)


class Stream:
    """The host's live event stream as the hub sees one: it records what is written."""

    def __init__(self) -> None:
        self.filter = Filter(None, OID, None)
        self.frames: list[dict[str, Any]] = []

    def push(self, payload: bytes, framed: bytes) -> None:
        data = payload.split(b"\ndata: ", 1)[1].rstrip(b"\n")
        self.frames.append(orjson.loads(data))


class Events:
    """The EventHub's hooks the output hub uses."""

    def __init__(self, stream: Stream) -> None:
        self.on_attach: list[Any] = []
        self.stream = stream

    def orchestrator_streams(self, oid: str) -> list[Stream]:
        return [self.stream] if oid == OID else []


class FeedMachine(RuleBasedStateMachine):
    viewers = Bundle("viewers")

    def __init__(self) -> None:
        super().__init__()
        # Smaller than `relay serve` allows (Settings.checked is not called), so that
        # the buffer is forgotten and slow viewers are cut within a few steps.
        settings = Settings(
            data_dir=Path("/nonexistent"), output_viewers=3, output_host_viewers=5,
            output_buffer=600, output_push_max=2400,
        )
        self.stream = Stream()
        self.hub = OutputHub(None, settings, Events(self.stream))  # type: ignore[arg-type]
        self.truth = dict.fromkeys(AGENTS, "")
        self.screens: dict[Viewer, str] = {}
        self.answered = dict.fromkeys(AGENTS, 0)  # frames sent before the agent's last screen
        self.serial = 0

    # -- viewers ---------------------------------------------------------------

    @rule(target=viewers, agent=st.sampled_from(AGENTS))
    def join(self, agent: str) -> Viewer | None:
        feed = self.hub.feeds.get(OID, {}).get(agent)
        full = feed is not None and len(feed.viewers) >= 3
        if full or self.hub.viewers_of_host.get(OID, 0) >= 5:
            return None
        viewer = self.hub.join(OID, agent, None)
        self.screens[viewer] = ""
        note(f"join {agent}: waiting={viewer.waiting}")
        return viewer

    @rule(viewer=viewers)
    def drain(self, viewer: Viewer | None) -> None:
        """What the viewer's handler does: write what is queued, in order."""
        if viewer is None or viewer not in self.screens:
            return
        for event, data, _ in viewer.take():
            text = orjson.loads(data)["data"]
            self.screens[viewer] = text if event == "snapshot" else self.screens[viewer] + text

    @rule(viewer=consumes(viewers))
    def leave(self, viewer: Viewer | None) -> None:
        if viewer is None or viewer not in self.screens:
            return
        self.hub.leave(viewer)
        del self.screens[viewer]

    @rule()
    def notice_end(self) -> None:
        """Handlers of cut viewers end and leave, as ``watch`` does."""
        for viewer in [v for v in self.screens if v.reason is not None]:
            assert viewer.reason == "overflow"
            note(f"cut a viewer of {viewer.aid}")
            self.hub.leave(viewer)
            del self.screens[viewer]

    # -- the host ----------------------------------------------------------------

    def _push(self, item: dict[str, Any]) -> None:
        chunk = w.OutputChunk(**item)
        delivered, unwatched = self.hub.deliver(OID, [chunk])
        assert delivered + len(unwatched) == 1

    @rule(agent=st.sampled_from(AGENTS), text=TEXT)
    def output(self, agent: str, text: str) -> None:
        self.truth[agent] += text
        self._push({"agent_id": agent, "kind": "output", "data": text})

    @rule(agent=st.sampled_from(AGENTS), big=st.integers(1, 400), text=TEXT)
    def burst(self, agent: str, big: int, text: str) -> None:
        """Output enough to pass the relay's buffer now and then."""
        self.output(agent, text * (big // len(text) + 1))

    @rule(agent=st.sampled_from(AGENTS))
    def screen(self, agent: str) -> None:
        """A fresh screen, as asked for: it is what the terminal shows now (a pane's
        screen is bounded: past that the host trims history, outside this model)."""
        if len(self.truth[agent]) <= SCREEN_MAX:
            self.answered[agent] = len(self.stream.frames)
            self._push({"agent_id": agent, "kind": "snapshot", "data": self.truth[agent]})

    @rule(agent=st.sampled_from(AGENTS), text=TEXT)
    def reset_screen(self, agent: str, text: str) -> None:
        """Output was lost (a new tap, a failed push): everyone starts over from here."""
        self.serial += 1
        self.answered[agent] = len(self.stream.frames)
        self.truth[agent] = f"[{self.serial}]{text}"
        self._push({"agent_id": agent, "kind": "snapshot", "data": self.truth[agent], "reset": True})

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def o1_every_viewer_with_a_screen_shows_the_truth(self) -> None:
        for viewer, screen in self.screens.items():
            if viewer.reason is not None:
                continue
            shown = screen
            for event, data, _ in viewer.queue:
                text = orjson.loads(data)["data"]
                shown = text if event == "snapshot" else shown + text
            if viewer.waiting:
                assert shown == "" and not viewer.queue, "a waiting viewer was sent output"
            else:
                assert shown == self.truth[viewer.aid], (viewer.aid, shown, self.truth[viewer.aid])

    @invariant()
    def o2_the_host_knows_exactly_who_is_watched(self) -> None:
        watched = sorted({v.aid for v in self.screens})
        frames = self.stream.frames
        assert (frames[-1]["agents"] if frames else []) == watched

    @invariant()
    def o3_a_waiting_viewer_has_been_asked_for(self) -> None:
        for viewer in self.screens:
            if viewer.waiting and viewer.reason is None:
                later = self.stream.frames[self.answered[viewer.aid]:]
                assert any(viewer.aid in f["refresh"] for f in later), f"nobody asked for {viewer.aid}"

    @invariant()
    def o4_the_relay_keeps_a_bounded_past(self) -> None:
        for feeds in self.hub.feeds.values():
            for feed in feeds.values():
                kept = (feed.snapshot[1] if feed.snapshot else 0) + sum(n for _, n in feed.tail)
                assert kept == feed.size <= self.hub.settings.output_buffer, (kept, feed.size)
                for viewer in feed.viewers:
                    assert viewer.queued <= self.hub.viewer_limit


TestFeedMachine = FeedMachine.TestCase
