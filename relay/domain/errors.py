"""The errors the relay can raise, one per way a request can fail.

    RelayError                      anything the relay refuses, with a message a person can act on
    ├── InvalidInputError   (400)   a field is missing, malformed or breaks a rule
    ├── ForbiddenError      (403)   the caller is known, but may not do this (a host token
    │                               widening its baseDir, a rotated token racing a write)
    ├── NotFoundError       (404)   no such agent, orchestrator, command or managed agent
    ├── ConflictError       (409)   the request fits, but not the entity's current state
    ├── TooLargeError       (413)   what the request would make others hold is over a limit
    └── StoreUnavailableError (503) the log could not be written; nothing was acknowledged

The HTTP layer maps each to its status in one middleware; nothing else decides
status codes.
"""

from __future__ import annotations


class RelayError(Exception):
    """Raised when the relay refuses a request; the message is shown to the client."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInputError(RelayError):
    """Raised when a request's field is missing, malformed or breaks a rule."""

    status = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class ForbiddenError(RelayError):
    """Raised when the caller is known but may not do this (a host token beyond its grant)."""

    status = 403


class NotFoundError(RelayError):
    """Raised when the named entity does not exist (or was removed)."""

    status = 404


class ConflictError(RelayError):
    """Raised when a request is well formed but the entity's state forbids it."""

    status = 409


class TooLargeError(RelayError):
    """Raised when a request is within the body limit but what it fans out to is not."""

    status = 413


class StoreUnavailableError(RelayError):
    """Raised when the event store cannot record; nothing was appended."""

    status = 503
