"""The host daemon (``relay host``): the orchestrator that runs agents on one machine.

It registers the machine with a relay, heartbeats, follows the commands that
the relay queues for it (spawn, restart, shutdown) and carries them out by
starting the configured provider commands in detached tmux sessions.

Modules:

- ``config``  — options and the env file, parsed once into a frozen ``HostConfig``.
- ``state``   — the JSON state file that makes restarts safe (atomic writes).
- ``tmux``    — the only module that runs tmux.
- ``launch``  — a stdlib-only shim that tmux runs; it execs the provider.
- ``client``  — the relay's HTTP API and its SSE stream, seen from a host.
- ``context`` — what the daemon's parts share (state, tmux, client, the command lock).
- ``registration``, ``stream``, ``commands``, ``agents``, ``watcher``, ``recovery``
  — the daemon's parts, one concept each (see ``daemon``'s docstring).
- ``daemon``  — wires the parts, the heartbeat loop, start and stop.
- ``cli``     — ``relay host`` arguments.
"""
