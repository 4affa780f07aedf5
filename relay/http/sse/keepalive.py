"""Keep-alive comments, and noticing clients that left.

aiohttp does not tell a handler that its client left (the handler is not
cancelled), so an idle stream would linger until its next write: every
transport is looked at once a second instead, which costs nothing per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Set

from relay.http.sse.encoding import KEEPALIVE, chunk
from relay.http.sse.subscriber import Subscriber


async def keep_alive(streams: Set[Subscriber], every: float) -> None:
    """Comments every ``every`` seconds to ``streams``; departed clients noticed within a second.

    ``streams`` is the hub's live set of open streams, read afresh each tick.
    """
    framed = chunk(KEEPALIVE)
    tick = min(every, 1.0)
    loop = asyncio.get_running_loop()
    next_comment = loop.time() + every
    while True:
        await asyncio.sleep(tick)
        comment = loop.time() >= next_comment
        if comment:
            next_comment += every
        for sub in list(streams):
            t = sub.transport
            if t is None or t.is_closing():
                sub.finish("gone")
            elif comment:
                sub.push(KEEPALIVE, framed)
