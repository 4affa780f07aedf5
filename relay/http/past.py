"""The past over HTTP: ``?at=<position>`` on the lists, and one entity's history.

``?at=`` answers from the read models as of that position (relay.audit.replay).
Its cost is bounded three ways: a few recent answers are cached (the
dashboard's time slider asks for the same position three times, once per
list), concurrent questions about one position share one fold, and the
replayer folds from its nearest anchor, so after the first question over a
long log each answer folds at most ``every`` (10,000) events. The first
question about a position older than every anchor folds from position 0:
about ten seconds on a million-event log (docs/benchmarks.md).

History reads one aggregate's events through the store's index (SQLite) or a
bounded scan per page (other stores), never the whole log per request.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

from aiohttp import web

from relay.audit.replay import Replayer
from relay.domain.errors import InvalidInputError
from relay.http import parse
from relay.http.keys import HUB, SERVICE
from relay.projections.queries import Queries
from relay.projections.readmodels import ReadModels
from relay.wire import shapes as w

KEEP = 6


class PastModels:
    """Read models as of past positions: cached, shared, folded off the loop."""

    def __init__(self, replayer: Replayer) -> None:
        self.replayer = replayer
        self._cache: OrderedDict[int, ReadModels] = OrderedDict()
        self._folding: dict[int, asyncio.Future[ReadModels]] = {}

    async def at(self, position: int) -> ReadModels:
        """The read models as of ``position`` (callers must not change them)."""
        rm = self._cache.get(position)
        if rm is not None:
            self._cache.move_to_end(position)
            return rm
        fut = self._folding.get(position)
        if fut is None:
            fut = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(None, self.replayer.state_at, position)
            )
            self._folding[position] = fut
            fut.add_done_callback(lambda f: self._done(position, f))
        return await asyncio.shield(fut)

    def _done(self, position: int, fut: asyncio.Future[ReadModels]) -> None:
        self._folding.pop(position, None)
        if fut.cancelled() or fut.exception() is not None:
            return
        self._cache[position] = fut.result()
        while len(self._cache) > KEEP:
            self._cache.popitem(last=False)


async def queries(request: web.Request, position: int | None) -> Queries:
    """The named queries over the live read models, or over those as of ``?at=``."""
    return Queries(await read_models(request, position))


async def read_models(request: web.Request, position: int | None) -> ReadModels:
    """The live read models, or those as of ``?at=<position>`` (decoded by the caller's query)."""
    service = request.app[SERVICE]
    if position is None:
        return service.rm
    live = service.rm
    if position >= live.position:
        if position > live.position:
            raise InvalidInputError(
                "at", f"position {position} is after the newest position ({live.position})"
            )
        return live
    return await request.app[HUB].past().at(position)


async def history(request: web.Request, kind: str, entity_id: str) -> dict[str, Any]:
    """One entity's events after ``?after=``, oldest first, paged like ``/api/log``."""
    service = request.app[SERVICE]
    agg, _, _ = Queries(service.rm).history_entity(kind, entity_id)
    page = parse.query(request, w.Page)
    reader = request.app[HUB].log()
    notes, nxt = await asyncio.get_running_loop().run_in_executor(
        None, reader.of_aggregate, agg, page.after, page.limit
    )
    events = [service.describe(n.id, reader.decode(n)) for n in notes]
    return {"events": events, "next": nxt}
