"""Every request body, query and response of the HTTP contract, declared once (ADR 0029).

A class's docstring is its schema's description; ``about()`` describes a
field; a kind (``Id``, ``Name``, ...) carries the limits and the message of a
refusal. The decoder (relay.wire.declare) and the OpenAPI document
(relay.http.openapi) are both generated from these, so adding a field is one
line here. Unknown fields are ignored; null means not given.
"""

import posixpath
from typing import Any, ClassVar, Literal

import msgspec

from relay.domain.errors import InvalidInputError
from relay.domain.message import MAX_LEASE_SECONDS, MESSAGE_TYPES, PRIORITIES, STATUSES
from relay.domain.rules import (
    ACTIONS,
    APPROVAL_MODES,
    ATTENTIONS,
    DEFAULT_APPROVAL_MODE,
    INPUT_ACTION,
    MAX_ATTENTION_EXCERPT,
    MAX_ATTENTION_REASON,
    MAX_BRANCH_CHARS,
    MAX_ID_CHARS,
    MAX_INPUT_CHARS,
    MAX_ORCHESTRATOR_ID_CHARS,
    MAX_PROMPT_CHARS,
    MAX_SESSION_ID_CHARS,
    MAX_TARGET_NAME,
    ORCHESTRATOR_AGENT_PREFIX,
    PROVIDERS,
    RESULT_STATUSES,
    SESSION_ID_PATTERN,
    check_agent_id,
    check_branch,
    check_id,
    check_orchestrator_id,
    check_printable,
    check_session_id,
    check_target,
)
from relay.nesting import INT_MAX, INT_MIN, MAX_DEPTH
from relay.wire.declare import Shape, about, fields_of, kind, limited

# -- limits, each written once ----------------------------------------------------------------

MAX_NAME = 200
MAX_PATH = 4096
MAX_TAGS = 64
MAX_LIST_ITEM = 100
MAX_ENV_KEYS = 1000
MAX_ENV_KEY = 256
MAX_MANAGED_AGENTS = 1000
MAX_ERROR = 4000
MAX_SUBJECT = 1000
MAX_LABELS = 32
MAX_AGENTS_LIMIT = 100_000
MAX_RESTARTS_REPORTED = 10_000
MAX_EPOCH_MS = 2**53 - 1
MAX_POSITION = 2**62
MAX_PAGE = 1000
DEFAULT_PAGE = 100
DEFAULT_LEASE_SECONDS = 60

NO_NUL = "^[^\\x00]*$"
# Printable text (issue 16): tab and newline allowed, every other control character refused.
PRINTABLE = "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$"
NOT_BLANK = "^[^\\x00]*[^\\x00\\s][^\\x00]*$"
ID_PATTERN = "^[^/\\s\\x00-\\x1f\\x7f-\\x9f]+$"
ENV_KEY_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
FREE_FORM_LIMITS = (
    f"Nested at most {MAX_DEPTH} levels (x-maxDepth; the object itself is level 1) and holding "
    "integers within 64 bits (-2^63 to 2^64-1); otherwise 400 naming the field."
)
_ID_WORDS = "printable characters without '/' or whitespace"
# Any JSON value the log can keep: integers within 64 bits, at any level (ADR 0011). The
# document names it as a component, so a free-form object states the limit to a fuzzer too.
JSON_VALUE = "#/components/schemas/JsonValue"
JSON_VALUE_SCHEMA = {
    "description": "Any JSON value whose integers lie within 64 bits (-2^63 to 2^64-1).",
    "anyOf": [
        {"type": ["null", "boolean", "string"]},
        {"type": "number", "not": {"type": "integer"}},
        {"type": "integer", "minimum": INT_MIN, "maximum": INT_MAX},
        {"type": "array", "items": {"$ref": JSON_VALUE}},
        {"type": "object", "additionalProperties": {"$ref": JSON_VALUE}},
    ],
}

# -- field kinds: limits for msgspec and the schema, and the message of a refusal ------------------
# The id kinds state their pattern for the schema only: their check (rules.check_id, the
# domain's rule, which the pattern cannot fully say) matches it anyway, so it runs once.

Id = kind(
    str,
    f"must be 1-{MAX_ID_CHARS} {_ID_WORDS}",
    check=check_id,
    min_length=1,
    max_length=MAX_ID_CHARS,
    description=f"1-{MAX_ID_CHARS} {_ID_WORDS}. The pattern shuts out control characters; "
    "the relay also refuses the other unprintable ones (format relay-id: unassigned, "
    "private-use and formatting code points).",
    extra_json_schema={"format": "relay-id", "pattern": ID_PATTERN},
)
OrchestratorId = kind(
    str,
    f"an orchestrator id must be 1-{MAX_ORCHESTRATOR_ID_CHARS} {_ID_WORDS} (its agent id "
    f"{ORCHESTRATOR_AGENT_PREFIX}<id> must fit {MAX_ID_CHARS})",
    check=check_orchestrator_id,
    min_length=1,
    max_length=MAX_ORCHESTRATOR_ID_CHARS,
    description=f"1-{MAX_ORCHESTRATOR_ID_CHARS} {_ID_WORDS}: an orchestrator is also the agent "
    f"{ORCHESTRATOR_AGENT_PREFIX}<id>, and that id must fit the {MAX_ID_CHARS}-character limit "
    "of every id.",
    extra_json_schema={"format": "relay-id", "pattern": ID_PATTERN},
)
AgentId = kind(
    str,
    f"must be 1-{MAX_ID_CHARS} {_ID_WORDS}, not starting with {ORCHESTRATOR_AGENT_PREFIX!r} "
    "(reserved for orchestrators), 'label:' or 'tag:' and not '*' (message targets)",
    check=check_agent_id,
    min_length=1,
    max_length=MAX_ID_CHARS,
    description=f"1-{MAX_ID_CHARS} {_ID_WORDS}. Ids starting with "
    f"{ORCHESTRATOR_AGENT_PREFIX!r} belong to orchestrators; '*', 'label:X' and 'tag:X' are "
    "message targets.",
    extra_json_schema={
        "format": "relay-id",
        "pattern": ID_PATTERN,
        "not": {"pattern": f"^({ORCHESTRATOR_AGENT_PREFIX}|label:|tag:|\\*$)"},
    },
)
Target = kind(
    str,
    "must be an agent id, 'label:X', 'tag:X' or '*'",
    check=check_target,
    min_length=1,
    description="An agent id (orchestrators' `orchestrator-<id>` included), `label:X` "
    "(every agent whose label is X), `tag:X` (every agent with tag X) or `*` (every agent). "
    "A broadcast never reaches its sender, includes offline agents, and is delivered to each "
    "recipient as its own message (ADR 0010).",
    extra_json_schema={
        "anyOf": [
            {"pattern": ID_PATTERN, "maxLength": MAX_ID_CHARS, "format": "relay-id"},
            {"pattern": f"^(label|tag):[^\\x00]{{1,{MAX_TARGET_NAME}}}$"},
            {"const": "*"},
        ],
    },
)


def text(max_len: int) -> Any:
    """A string of at most ``max_len`` characters without NUL."""
    return kind(
        str,
        f"must be a string of at most {max_len} characters, without NUL",
        max_length=max_len,
        pattern=NO_NUL,
    )


Name = text(MAX_NAME)


def printable(max_len: int, description: str | None = None) -> Any:
    """Printable text of at most ``max_len`` characters (tab and newline allowed); a refusal
    names the control character (rules.check_printable, which the pattern cannot word)."""
    extra: dict[str, Any] = {"extra_json_schema": {"pattern": PRINTABLE}}
    if description is not None:
        extra["description"] = description
    return kind(
        str,
        f"must be at most {max_len} printable characters (tab and newline allowed)",
        check=check_printable,
        max_length=max_len,
        **extra,
    )

Path = text(MAX_PATH)
NonBlank = kind(
    str,
    f"must be a non-blank string of at most {MAX_NAME} characters, without NUL",
    min_length=1,
    max_length=MAX_NAME,
    pattern=NOT_BLANK,
    description="Not blank.",
)
BaseDir = kind(
    str,
    f"must be an absolute path of at most {MAX_PATH} characters, without NUL",
    min_length=1,
    max_length=MAX_PATH,
    pattern="^/[^\\x00]*$",
    description="Absolute path; stored normalised.",
)
Provider = kind(
    Literal[PROVIDERS],
    f"must be one of {', '.join(PROVIDERS)}",
    missing=f"is required: one of {', '.join(PROVIDERS)}",
)
Providers = kind(
    list[Literal[PROVIDERS]],
    f"must name at least one of {', '.join(PROVIDERS)}, and nothing else",
    min_length=1,
    max_length=len(PROVIDERS),
)
ApprovalMode = kind(Literal[APPROVAL_MODES], f"must be one of {', '.join(APPROVAL_MODES)}")
EnvKeys = kind(
    list[
        limited(str, max_length=MAX_ENV_KEY, pattern=ENV_KEY_PATTERN)
    ],
    "must be environment variable names (letters, digits, '_'), never values",
    max_length=MAX_ENV_KEYS,
    description="Names of environment variables, never values ('K=V' is refused).",
)
Words = kind(
    list[limited(str, min_length=1, max_length=MAX_LIST_ITEM)],
    f"must be a list of at most {MAX_TAGS} non-empty strings of at most {MAX_LIST_ITEM} characters",
    max_length=MAX_TAGS,
)
FreeForm = kind(
    dict[str, Any],
    "must be a JSON object",
    description="Free-form; null means {}. " + FREE_FORM_LIMITS,
    extra_json_schema={"x-maxDepth": MAX_DEPTH, "additionalProperties": {"$ref": JSON_VALUE}},
)
Labels = kind(
    dict[
        limited(str, min_length=1, max_length=MAX_LIST_ITEM),
        limited(str, max_length=MAX_LIST_ITEM),
    ],
    f"must be an object of at most {MAX_LABELS} labels mapping non-empty names to strings of "
    f"at most {MAX_LIST_ITEM} characters",
    max_length=MAX_LABELS,
    description="Labels of a host, matched exactly by a spawn's selector.",
)
Count = kind(int, "must be a non-negative integer", ge=0, le=MAX_EPOCH_MS)
EpochMs = about(int, "Epoch milliseconds (server receive time).")
Deadline = kind(
    int,
    "must be a whole number of seconds, at least 1",
    ge=1,
    le=2**63 - 1,  # stated, so a fuzzer knows a longer number is refused (ADR 0011)
    description="Seconds until the command expires; the relay's --command-deadline is both "
    "the default and the most (a longer ask gets it).",
)
ExitCode = kind(int, "must be null or an integer from 0 to 255", ge=0, le=255)
At = kind(
    int, "is required: epoch milliseconds", ge=0, le=MAX_EPOCH_MS, description="Epoch milliseconds."
)
Restarts = kind(
    int, f"must be an integer from 0 to {MAX_RESTARTS_REPORTED}", ge=0, le=MAX_RESTARTS_REPORTED
)
Position = kind(int, f"must be a log position from 0 to {MAX_POSITION}", ge=0, le=MAX_POSITION)
PageSize = kind(int, f"must be between 1 and {MAX_PAGE}", ge=1, le=MAX_PAGE)


# -- worktrees and resumed sessions (issue 16, ADR 0034), kept together ----------------------------

_SESSION_WORDS = (
    f"1-{MAX_SESSION_ID_CHARS} letters, digits, '.', '_' or '-', starting with a letter or digit"
)
# The pattern is the schema's; the check (a full match: msgspec's pattern search lets a
# trailing newline through '$') is the domain's rule, which the host applies too.
SessionId = kind(
    str,
    f"must be a session id: {_SESSION_WORDS}",
    check=check_session_id,
    min_length=1,
    max_length=MAX_SESSION_ID_CHARS,
    pattern=SESSION_ID_PATTERN,
    description=f"A provider's session id: {_SESSION_WORDS}.",
)
Branch = kind(
    str,
    f"must be a branch name git accepts, of at most {MAX_BRANCH_CHARS} characters",
    check=check_branch,
    min_length=1,
    max_length=MAX_BRANCH_CHARS,
    pattern=NO_NUL,
    description="A name git accepts for a branch (git check-ref-format --branch; not '@'), "
    "else 400. A new branch starts at the repository's HEAD; an existing one that no worktree "
    "has checked out is checked out as it is (one checked out anywhere fails the spawn, naming "
    "where). Default: relay/<agentId>.",
)
AbsolutePath = kind(
    str,
    f"must be an absolute path of at most {MAX_PATH} characters, without NUL",
    min_length=1,
    max_length=MAX_PATH,
    pattern="^/[^\\x00]*$",
)


class WorktreeRequest(Shape, kw_only=True):
    """Run the agent in a new git worktree of the repository that holds cwd, at
    <baseDir>/.relay/worktrees/<agentId> on the host (in cwd's subfolder of it when cwd is one).
    The spawn fails with the reason when cwd is not in a git repository inside baseDir, or git
    refuses."""

    branch: Branch | None = None


class CommandWorktree(Shape):
    """A spawn in a new git worktree, on this branch (null: relay/<agentId>)."""

    branch: str | None


# -- requests: orchestrators and their hosts -----------------------------------------------------


class OrchestratorRegistration(Shape, kw_only=True):
    """Unknown fields are ignored; null means not given."""

    id: OrchestratorId
    hostname: NonBlank
    base_dir: BaseDir
    providers: Providers | None = msgspec.field(default=None)
    env_keys: EnvKeys | None = None
    meta: FreeForm | None = None
    max_agents: (
        about(
            kind(int, f"must be an integer from 1 to {MAX_AGENTS_LIMIT}", ge=1, le=MAX_AGENTS_LIMIT),
            "Agents this host runs at most; spawns beyond it are 409.",
        )
        | None
    ) = None
    labels: Labels | None = None

    def finish(self) -> None:
        self.base_dir = posixpath.normpath(self.base_dir)
        self.providers = list(dict.fromkeys(self.providers or PROVIDERS))
        self.env_keys = self.env_keys or []
        self.meta = self.meta or {}
        self.labels = self.labels or {}

    def event_fields(self) -> dict[str, Any]:
        """What the registration events record, by the aggregate's names: every field but the
        id and the capacity (``declare_capacity``'s); a field added here passes through."""
        fields = fields_of(self)
        for name in ("id", "max_agents", "labels"):
            del fields[name]
        fields["providers"] = fields["providers"] or list(PROVIDERS)
        fields["env_keys"] = fields["env_keys"] or []
        fields["meta"] = fields["meta"] or {}
        return fields


class Enrollment(Shape, kw_only=True):
    """What an admin grants a host. Unknown fields are ignored; null means not given (a known
    orchestrator keeps its hostname and providers, a new one gets its id and every provider)."""

    base_dir: about(
        BaseDir,
        "Absolute path; stored normalised. The host's own token can re-register with this "
        "folder or one inside it (by path components), never with anything wider.",
    )
    hostname: NonBlank | None = None
    providers: Providers | None = None

    def finish(self) -> None:
        self.base_dir = posixpath.normpath(self.base_dir)
        if self.providers is not None:
            self.providers = list(dict.fromkeys(self.providers))

    def command_fields(self) -> dict[str, Any]:
        return fields_of(self)


class Load(Shape, kw_only=True):
    """A host's load, as its heartbeat reports it."""

    active_agents: kind(
        int,
        "is required: an integer of at least 0",
        ge=0,
        le=MAX_AGENTS_LIMIT,
    )
    cpu: (
        about(
            kind(float, "must be a number from 0 to 1e+06", ge=0, le=1e6),
            "Load, e.g. the 1-minute load average.",
        )
        | None
    ) = None
    memory: (
        about(kind(float, "must be a number from 0 to 1", ge=0, le=1.0), "Fraction in use.")
        | None
    ) = None


class Heartbeat(Shape):
    """Optional body of an orchestrator heartbeat."""

    load: kind(Load, "must be an object {activeAgents, cpu?, memory?}") | None = None

    def load_fields(self) -> dict[str, Any] | None:
        """The load as the heartbeat event keeps it (only what was sent)."""
        if self.load is None:
            return None
        load: dict[str, Any] = {"activeAgents": self.load.active_agents}
        if self.load.cpu is not None:
            load["cpu"] = self.load.cpu
        if self.load.memory is not None:
            load["memory"] = self.load.memory
        return load


class ExitInfo(Shape, kw_only=True):
    """How the agent's program last ended (exit status, or the signal)."""

    at: At
    status: ExitCode | None = None
    signal: ExitCode | None = None


class CrashLoop(Shape, kw_only=True):
    """Present when the host gave up: the agent exited with a failure after --restart-max
    restarts within --restart-window, so it is not restarted again until an operator's restart
    command. Its last exit status or signal says why."""

    at: At
    restarts: kind(
        int,
        f"is required: an integer from 0 to {MAX_RESTARTS_REPORTED}",
        ge=0,
        le=MAX_RESTARTS_REPORTED,
    )
    exit_status: ExitCode | None = None
    signal: ExitCode | None = None


class ManagedAgentReport(Shape, kw_only=True):
    """One agent the host runs; agentIds are unique within a report."""

    agent_id: Id
    provider: Provider
    tmux_session: kind(
        str,
        f"of managed agent {{agentId!r}} must be a non-blank string of at most {MAX_NAME} "
        "characters, without NUL",
        missing="is required for managed agent {agentId!r}: the tmux session it runs in",
        min_length=1,
        max_length=MAX_NAME,
        pattern=NOT_BLANK,
        description="The tmux session the agent runs in (socket relay); not blank.",
    )
    cwd: (
        about(
            Path,
            "Inside the orchestrator's baseDir (compared component by component, as for a "
            "spawn); a report naming a cwd outside it is 400.",
        )
        | None
    ) = None
    label: Name | None = None
    approval_mode: ApprovalMode | None = None
    pid: Count | None = None
    started_at: about(Count, "Epoch ms; defaults to the report's time.") | None = None
    restarts: (
        about(
            Restarts,
            "Restarts the host made after the agent exited with a failure, within its "
            "--restart-window.",
        )
        | None
    ) = None
    last_exit: kind(ExitInfo, "must be an object") | None = None
    crashloop: kind(CrashLoop, "must be an object") | None = None
    worktree: (
        about(AbsolutePath, "The agent's git worktree (its top folder): inside baseDir, as cwd.")
        | None
    ) = None
    branch: about(Name, "The worktree's branch.") | None = None
    session_id: SessionId | None = None

    def as_reported(self, at: int) -> dict[str, Any]:
        """The managed agent as the read models keep it (``at``: the report's time)."""
        agent: dict[str, Any] = {
            "agentId": self.agent_id,
            "provider": self.provider,
            "tmuxSession": self.tmux_session,
            "cwd": self.cwd or "",
            "approvalMode": self.approval_mode or DEFAULT_APPROVAL_MODE,
            "startedAt": self.started_at or at,
        }
        if self.label is not None:
            agent["label"] = self.label
        if self.pid is not None:
            agent["pid"] = self.pid
        if self.restarts is not None:
            agent["restarts"] = self.restarts
        if self.last_exit is not None:
            agent["lastExit"] = msgspec.to_builtins(self.last_exit)
        if self.crashloop is not None:
            agent["crashloop"] = msgspec.to_builtins(self.crashloop)
        if self.worktree is not None:
            agent["worktree"] = self.worktree
        if self.branch is not None:
            agent["branch"] = self.branch
        if self.session_id is not None:
            agent["sessionId"] = self.session_id
        return agent


class ManagedAgentsReport(Shape):
    """What a host runs now: the list replaces the previous one."""

    agents: about(
        kind(
            list[ManagedAgentReport],
            f"is required and must be a list of at most {MAX_MANAGED_AGENTS} managed agents",
            max_length=MAX_MANAGED_AGENTS,
        ),
        "Replaces the previous list; an agentId listed twice is 400.",
    )

    def finish(self) -> None:
        seen: set[str] = set()
        for i, agent in enumerate(self.agents):
            if agent.agent_id in seen:
                raise InvalidInputError(
                    f"agents[{i}].agentId", f"{agent.agent_id!r} is listed twice"
                )
            seen.add(agent.agent_id)

    def as_reported(self, at: int) -> list[dict[str, Any]]:
        return [a.as_reported(at) for a in self.agents]


class SpawnRequest(Shape, kw_only=True):
    """Unknown fields are ignored; null means not given."""

    provider: Provider
    cwd: (
        about(
            Path,
            "Inside the orchestrator's baseDir (by path components); relative paths are taken "
            "from baseDir; defaults to baseDir.",
        )
        | None
    ) = None
    label: Name | None = None
    approval_mode: about(ApprovalMode, f"Default {DEFAULT_APPROVAL_MODE}.") | None = None
    prompt: text(MAX_PROMPT_CHARS) | None = None
    selector: (
        about(Labels, "POST /api/agents/spawn only: labels the chosen host must have.") | None
    ) = None
    deadline_seconds: Deadline | None = None
    worktree: kind(WorktreeRequest, "must be an object {branch?}") | None = None
    resume: (
        about(
            SessionId,
            "Resume this provider session: the host adds the provider's resume arguments "
            "(claude: --resume <id>; codex: resume <id>; set per host with --resume-args). "
            f"{_SESSION_WORDS}.",
        )
        | None
    ) = None

    def command_fields(self) -> dict[str, Any]:
        """What the spawn command takes from the request."""
        return {
            "provider": self.provider,
            "cwd": self.cwd,
            "label": self.label,
            "approval_mode": self.approval_mode or DEFAULT_APPROVAL_MODE,
            "prompt": self.prompt,
            "worktree": None if self.worktree is None else {"branch": self.worktree.branch},
            "resume": self.resume,
        }


class ActionRequest(Shape, kw_only=True):
    """Restart or shut down one managed agent, or all of them."""

    action: kind(
        Literal[ACTIONS],
        f"must be one of {', '.join(ACTIONS)}",
        missing=f"is required: one of {', '.join(ACTIONS)}",
    )
    agent_id: about(Id, "A managed agent's id; omit for all of them.") | None = None
    deadline_seconds: Deadline | None = None
    remove_worktree: (
        kind(
            bool,
            "must be true or false",
            description="A shutdown only (else 400): after stopping the agent, remove its "
            "worktree if it has no uncommitted or untracked changes (its branch is kept). "
            "Otherwise the agent is still stopped, the worktree is kept, and the command fails "
            "naming the changed files.",
        )
        | None
    ) = None
    # What the fields cannot say one by one: removeWorktree is a shutdown's option.
    SCHEMA_EXTRA: ClassVar[dict[str, Any]] = {
        "if": {"required": ["removeWorktree"], "properties": {"removeWorktree": {"const": True}}},
        "then": {"properties": {"action": {"const": "shutdown"}}},
    }

    def finish(self) -> None:
        if self.remove_worktree and self.action != "shutdown":
            raise InvalidInputError(
                "removeWorktree", f"only a shutdown removes worktrees, not a {self.action}"
            )

    def command_fields(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "agent_id": self.agent_id,
            "remove_worktree": bool(self.remove_worktree),
        }


# -- needs input and answers (issue 16, ADR 0032, 0033) ---------------------------------------

ACTION_KINDS = (*ACTIONS, INPUT_ACTION)
Attention = about(
    Literal[ATTENTIONS],
    "input: the agent asks a question and waits for a person's answer (a permission prompt, "
    "`Proceed? [y/N]`); idle: it printed nothing for its host's --idle-after and asks nothing "
    "the host recognises (it may have finished); null: neither. Reported by its host "
    "(ADR 0032); cleared when its output moves on, when an input command to it is done, or "
    "when it is no longer reported.",
)


class ActionKind(Shape):
    """Which action a body asks for: what picks the shape it is decoded into."""

    action: kind(
        Literal[ACTION_KINDS],
        f"must be one of {', '.join(ACTION_KINDS)}",
        missing=f"is required: one of {', '.join(ACTION_KINDS)}",
    )


class InputAction(Shape, kw_only=True):
    """Type `text` into a managed agent's terminal, literally (never read by a shell or as tmux
    key names), then Enter unless `enter` is false. The text is kept in the log: the audit
    trail of who told which agent what. When the host reports the command done, the agent's
    attention is cleared (AgentInputResumed, reason `input sent`). Something must be typed:
    text, or Enter."""

    action: Literal["input"]
    agent_id: about(Id, "The managed agent to type into.")
    text: printable(
        MAX_INPUT_CHARS,
        "Printable characters, tab and newline; empty is allowed when Enter follows (to answer "
        "`press Enter`).",
    )
    enter: about(kind(bool, "must be true or false"), "Default true.") | None = None
    deadline_seconds: Deadline | None = None

    def finish(self) -> None:
        if not self.text and self.enter is False:
            raise InvalidInputError("text", "is empty and enter is false: there is nothing to type")

    def command_fields(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "text": self.text, "enter": self.enter is not False}


class AttentionReport(Shape, kw_only=True):
    """A host's word on one of its managed agents. Repeating the current state (the same
    attention and reason; null when it has none) records nothing."""

    attention: kind(
        Literal[ATTENTIONS] | None,
        f"must be one of {', '.join(ATTENTIONS)}, or null",
        missing=f"is required: one of {', '.join(ATTENTIONS)}, or null",
    )
    reason: printable(MAX_ATTENTION_REASON, "Why the host thinks so.") | None = None
    excerpt: (
        printable(MAX_ATTENTION_EXCERPT, "The terminal's last lines, control characters removed.")
        | None
    ) = None

    def command_fields(self) -> dict[str, Any]:
        return {
            "attention": self.attention,
            "reason": self.reason or "",
            "excerpt": self.excerpt or "",
        }


class CommandProgressRequest(Shape):
    """The host started the command."""

    status: about(
        kind(Literal["running"], "is required: running", missing="is required: running"),
        "The host started the command (so a slow start is not a lost one).",
    )


class CommandResultRequest(Shape, kw_only=True):
    """A command's one result."""

    status: kind(
        Literal[RESULT_STATUSES],
        f"must be one of {', '.join(RESULT_STATUSES)}",
        missing=f"is required: one of {', '.join(RESULT_STATUSES)}",
    )
    error: text(MAX_ERROR) | None = None
    agent_id: Id | None = None

    def command_fields(self) -> dict[str, Any]:
        return fields_of(self)


class Empty(Shape):
    """Ignored; if sent, it must be a JSON object."""


# -- requests: agents and messages -----------------------------------------------------------------


class AgentRegistration(Shape, kw_only=True):
    """Unknown fields are ignored; null means not given."""

    id: AgentId
    name: about(Name, "Defaults to the id.") | None = None
    label: Name | None = None
    tags: Words | None = None
    machine: Name | None = None
    capabilities: Words | None = None
    meta: FreeForm | None = None

    def finish(self) -> None:
        self.name = self.name or self.id
        self.tags = list(dict.fromkeys(self.tags or ()))
        self.capabilities = list(dict.fromkeys(self.capabilities or ()))
        self.meta = self.meta or {}

    def command_fields(self) -> dict[str, Any]:
        return fields_of(self, id="agent_id")


class MessageRequest(Shape, kw_only=True):
    """A message to one agent, or a broadcast."""

    sender: Id = msgspec.field(name="from")
    to: Target
    body: about(
        kind(str, "is required and must be a string without NUL", pattern=NO_NUL),
        "Up to the body limit of the request; no NUL characters.",
    )
    message_type: kind(
        Literal[MESSAGE_TYPES], f"must be one of {', '.join(MESSAGE_TYPES)}"
    ) = msgspec.field(default="message", name="type")
    subject: text(MAX_SUBJECT) | None = None
    meta: (
        kind(
            dict[str, Any],
            "must be a JSON object",
            description="Kept as given; `priority` (normal|urgent) orders the inbox; "
            "`orchestratorControl` is reserved for the relay. " + FREE_FORM_LIMITS,
            extra_json_schema={
                "x-maxDepth": MAX_DEPTH,
                "additionalProperties": {"$ref": JSON_VALUE},
                "properties": {"priority": {"enum": [*PRIORITIES, None]}},
                "not": {"required": ["orchestratorControl"]},
            },
        )
        | None
    ) = None

    def finish(self) -> None:
        self.meta = self.meta or {}
        priority = self.meta.get("priority")
        if priority is not None and priority not in PRIORITIES:
            raise InvalidInputError("meta.priority", f"must be one of {', '.join(PRIORITIES)}")
        if "orchestratorControl" in self.meta:
            raise InvalidInputError(
                "meta.orchestratorControl",
                "is set by the relay for spawn and action commands; use those endpoints",
            )

    def command_fields(self) -> dict[str, Any]:
        return fields_of(self)


class ClaimRequest(Shape, kw_only=True):
    """Who claims, and for how long."""

    agent_id: about(Id, "The claimant: must be the message's recipient.")
    lease_seconds: kind(
        float,
        f"must be a number of seconds above 0 and at most {MAX_LEASE_SECONDS}",
        gt=0,
        le=MAX_LEASE_SECONDS,
    ) = DEFAULT_LEASE_SECONDS

    @property
    def lease_ms(self) -> int:
        return max(1, round(self.lease_seconds * 1000))


class ClaimHolder(Shape, kw_only=True):
    """The holder of a claim, and optionally the claim it holds."""

    agent_id: Id
    claim_id: (
        about(
            Id,
            "The claim you hold (from the claim's answer). Optional; when given it must still be "
            "the current claim, so an ack from an earlier claim of the same agent is refused.",
        )
        | None
    ) = None


# -- queries -----------------------------------------------------------------------------------------

AtPosition = about(
    Position,
    "Answer as of this log position (the read models after the event at it). Folded from the "
    "nearest in-memory anchor; the first question over a long log can take seconds, later ones "
    "at most 10,000 events of folding.",
)


class Page(Shape):
    """A page of the log after a position."""

    after: Position = 0
    limit: PageSize = DEFAULT_PAGE


class ReapQuery(Shape):
    force: (
        about(
            kind(Literal["true", "false"], "must be one of true, false"),
            "true: reap once whatever the mass-outage brake says.",
        )
        | None
    ) = None


class AgentsQuery(Shape):
    status: kind(Literal["online", "offline"], "must be one of online, offline") | None = None
    at: AtPosition | None = None


class OrchestratorsQuery(Shape):
    at: AtPosition | None = None


class ManagedAgentsQuery(Shape):
    state: (
        kind(Literal["running", "unknown", "lost"], "must be one of running, unknown, lost") | None
    ) = None
    attention: (
        about(
            kind(Literal[ATTENTIONS], f"must be one of {', '.join(ATTENTIONS)}"),
            "Only agents with this attention: `input` is the needs-input queue.",
        )
        | None
    ) = None
    at: AtPosition | None = None


COMMAND_STATES = ("pending", "running", "done", "failed", "expired")


class CommandsQuery(Shape):
    status: kind(Literal[COMMAND_STATES], f"must be one of {', '.join(COMMAND_STATES)}") | None = None


class MessagesQuery(Shape, kw_only=True):
    to: about(Target, "The recipient, or the target as sent.") | None = None
    sender: Id | None = msgspec.field(default=None, name="from")
    status: kind(Literal[STATUSES], f"must be one of {', '.join(STATUSES)}") | None = None
    message_type: (
        kind(Literal[MESSAGE_TYPES], f"must be one of {', '.join(MESSAGE_TYPES)}") | None
    ) = msgspec.field(default=None, name="type")
    broadcast_id: Id | None = None
    after: Position = 0
    limit: PageSize = DEFAULT_PAGE


class InboxQuery(Shape):
    limit: PageSize = DEFAULT_PAGE


# -- responses ---------------------------------------------------------------------------------------
# Declared for the document (and the fuzz test's response checks); the read models build
# the answers. A field with a default is one an answer may leave out.

Online = Literal["online", "offline"]
CommandKind = Literal["spawn", "restart", "shutdown", "input"]


class Error(Shape):
    """Every refusal: one sentence naming the problem (and the field, for invalid input)."""

    error: about(str, "One sentence to act on.")


class Ok(Shape):
    ok: Literal[True]


class Agent(Shape):
    """An agent; orchestrators are listed as agents too (``orchestrator-<id>``)."""

    id: Id
    name: str
    label: str | None
    tags: list[str]
    machine: str | None
    capabilities: list[str]
    status: Online
    meta: dict[str, Any]
    last_seen: EpochMs
    created_at: EpochMs


class ManagedAgent(Shape, kw_only=True):
    """An agent a host runs, as its host last reported it."""

    agent_id: Id
    provider: Literal[PROVIDERS]
    tmux_session: str
    cwd: str
    approval_mode: Literal[APPROVAL_MODES]
    started_at: EpochMs
    label: str | None = None
    pid: int | None = None
    state: (
        about(
            Literal["running", "unknown", "lost"],
            "running: reported by an online host; unknown: its host is offline (for up to "
            "--lost-after); lost: its host has been offline longer. A host that comes back and "
            "reports returns its agents to running, with no respawn.",
        )
        | None
    ) = None
    restarts: Restarts | None = None
    last_exit: ExitInfo | None = None
    crashloop: CrashLoop | None = None
    worktree: about(str, "The agent's git worktree (inside baseDir; ADR 0034).") | None = None
    branch: about(str, "The worktree's branch.") | None = None
    attention: Attention | None = None
    attention_since: (
        about(int, "Epoch ms the relay recorded the current attention (null with none).") | None
    ) = None
    attention_reason: (
        about(
            str,
            "Why the host thinks so, e.g. `permission_prompt: Claude needs your permission to "
            "use Bash` (the provider's hook) or `no output for 30s; matches Proceed\\?` (the "
            "generic rule).",
        )
        | None
    ) = None
    attention_excerpt: (
        about(
            str,
            "The last lines the agent's terminal showed when it was detected, printable: what "
            "the question was.",
        )
        | None
    ) = None
    session_id: (
        about(str, "The provider session: the one it was resumed with, or one the provider "
              "reported (Claude Code's hooks do).")
        | None
    ) = None


class ManagedAgentListing(ManagedAgent, kw_only=True):
    """A managed agent with where it runs."""

    orchestrator_id: Id
    hostname: str
    orchestrator_status: Online


class Orchestrator(Shape, kw_only=True):
    """A host's orchestrator."""

    id: OrchestratorId
    hostname: str
    status: Online
    agent_id: about(Id, f"{ORCHESTRATOR_AGENT_PREFIX}<id>")
    providers: list[Literal[PROVIDERS]]
    base_dir: str
    env_keys: about(list[str], "Names only, never values.")
    meta: dict[str, Any]
    managed_agents: list[ManagedAgent]
    last_seen: EpochMs
    created_at: EpochMs
    max_agents: int | None = None
    labels: dict[str, str] | None = None
    load: Load | None = None
    active_agents: (
        about(int, "The last heartbeat's load.activeAgents, else the reported agents.") | None
    ) = None
    offline_since: about(int, "Epoch ms it was last reaped (null: never).") | None = None
    agents_lost_at: (
        about(
            int,
            "Epoch ms its managed agents were declared lost (offline longer than --lost-after); "
            "null while it is online.",
        )
        | None
    ) = None


OrchestratorToken = about(
    kind(str, "must be a token", min_length=32),
    "The orchestrator's token: valid only for its own heartbeat, reports, commands, results, "
    "event stream and re-registration inside its granted baseDir, until it registers again, is "
    "rotated or revoked. Shown once; the log keeps only its SHA-256. Give it to the host in a "
    "0600 file (`relay host --token-file`), never on a command line.",
)


class OrchestratorWithToken(Orchestrator, kw_only=True):
    """A registered or enrolled orchestrator, with its new token (shown this once)."""

    orchestrator_token: OrchestratorToken
    heartbeat_interval_ms: (
        about(int, "How often the host should heartbeat (the relay sets the pace).") | None
    ) = None


class RotatedToken(Shape):
    orchestrator_id: Id
    orchestrator_token: OrchestratorToken


class CommandExpiry(Shape):
    reason: Literal["deadline passed", "orchestrator offline"]
    at: EpochMs


class CommandOutcome(Shape):
    status: Literal[RESULT_STATUSES]
    error: str | None
    agent_id: str | None
    at: EpochMs


class Command(Shape, kw_only=True):
    """A spawn or action for one host, and what became of it."""

    id: str
    orchestrator_id: Id
    kind: CommandKind
    status: Literal[COMMAND_STATES]
    requested_at: EpochMs
    requested_by: about(
        str,
        "'operator' (the admin token, or no token on a loopback relay) or 'orchestrator:<id>'.",
    )
    deadline_at: (
        about(int, "Epoch ms; pending or running past it, the command expires.") | None
    ) = None
    started_at: EpochMs | None = None
    expired: CommandExpiry | None = None
    provider: Literal[PROVIDERS] | None = None
    cwd: str | None = None
    label: str | None = None
    approval_mode: Literal[APPROVAL_MODES] | None = None
    prompt: str | None = None
    action: Literal[ACTION_KINDS] | None = None
    agent_id: str | None = None
    text: about(str, "input: what was (or will be) typed.") | None = None
    enter: about(bool, "input: whether Enter follows the text.") | None = None
    result: CommandOutcome | None = None
    worktree: CommandWorktree | None = None
    resume: about(str, "A spawn that resumes this provider session.") | None = None
    remove_worktree: (
        about(Literal[True], "A shutdown that removes the agent's worktree if clean.") | None
    ) = None


class SpawnAccepted(Shape, kw_only=True):
    ok: Literal[True]
    orchestrator_id: Id
    command: Command
    provider: Literal[PROVIDERS] | None = None


class ActionAccepted(Shape):
    ok: Literal[True]
    action: Literal[ACTION_KINDS]
    command: Command


class AttentionRecorded(Shape, kw_only=True):
    """The agent as the relay holds it after a host's attention report."""

    ok: Literal[True]
    recorded: about(bool, "Whether this report changed anything (an event was appended).")
    managed_agent: ManagedAgentListing


class LogEvent(Shape, kw_only=True):
    """One stored event, as the log and the histories show it."""

    position: kind(int, "", ge=1)
    type: about(str, "The stored event's name.")
    entity_id: str | None
    at: EpochMs
    data: about(dict[str, Any], "The event's fields; never token hashes.")
    entity_kind: Literal["agent", "orchestrator", "message", "broadcast", None] = None


class PresenceInterval(Shape):
    """One entity's run of heartbeats, as kept after thinning: every heartbeat between
    firstPosition and lastPosition of that entity, none of them kept whole."""

    type: Literal["AgentHeartbeatReceived", "OrchestratorHeartbeatReceived"]
    entity_id: str | None
    entity_kind: Literal["agent", "orchestrator", None]
    first_position: kind(int, "", ge=1)
    last_position: kind(int, "", ge=1)
    count: about(kind(int, "", ge=1), "Heartbeats in the run.")
    first_at: EpochMs
    last_at: EpochMs
    longest_gap_ms: about(
        kind(int, "", ge=0), "The longest silence between two heartbeats of the run."
    )


class LogPage(Shape):
    events: list[LogEvent]
    next: about(kind(int, "", ge=0), "Pass as `after` for the next page.")
    intervals: about(
        list[PresenceInterval],
        "Thinned heartbeat runs that start after `after` and at or before `next` (empty where "
        "nothing was thinned).",
    )


class HistoryPage(Shape):
    events: list[LogEvent]
    next: about(int, "Pass as `after` for the next page.")


class HealthCheck(Shape, kw_only=True):
    name: str
    status: Literal["ok", "warn", "suspended", "error"]
    detail: str
    urls: (
        about(
            list[dict[str, Any]],
            "The notifier check only (with --notify-url): each URL (scheme, host and port), its "
            "key, position, lag, delivered, failures and lastError; warn when one is more than "
            "100 positions behind or failing.",
        )
        | None
    ) = None


class Health(Shape):
    status: about(
        Literal["ok", "warn", "degraded", "error"],
        "degraded: the reaper is suspended (mass outage); still HTTP 200.",
    )
    version: str
    generated_at: EpochMs
    checks: list[HealthCheck]


class ReapResult(Shape, kw_only=True):
    ok: Literal[True]
    reaped_agent_ids: list[str]
    reaped_orchestrator_ids: list[str]
    released_message_ids: list[str]
    released_task_ids: list[str]
    expired_command_ids: list[str] | None = None
    lost_orchestrator_ids: (
        about(list[str], "Hosts offline longer than --lost-after: their agents are now lost.")
        | None
    ) = None
    suspended: about(bool, "The reaper is suspended (mass outage).") | None = None


class LastRelease(Shape, kw_only=True):
    reason: Literal["released", "expired"] | None = None
    claim_id: str | None = None
    agent_id: str | None = None
    at: EpochMs | None = None


class Message(Shape, kw_only=True):
    """One message in one agent's inbox. Status moves pending → claimed → acked, claimed →
    pending on release or when the lease ends, and any status → deleted."""

    id: str
    seq: about(
        int,
        "The log position where it was sent: the order of messages and the `after` cursor of "
        "GET /api/messages.",
    )
    sender: str = msgspec.field(name="from")
    to: about(str, "The target as sent (`*`, `tag:X`, an id).")
    recipient: about(str, "The agent whose inbox holds it.")
    message_type: Literal[MESSAGE_TYPES] = msgspec.field(name="type")
    subject: str | None
    body: str
    meta: about(
        dict[str, Any],
        "As sent. `priority` (normal|urgent) orders the inbox; `delivery` is kept as given; "
        "`orchestratorControl` is set by the relay on the urgent system message that mirrors "
        "each spawn or action command: {action, commandId, provider, cwd, label, approvalMode, "
        "prompt, agentId, requestedBy, requestedAt}, plus worktree and resume on a spawn that "
        "asked for them and removeWorktree on such a shutdown.",
    )
    priority: Literal[PRIORITIES]
    broadcast_id: about(str, "Shared by every recipient's copy of one broadcast.") | None
    status: Literal[STATUSES]
    created_at: EpochMs
    claim_id: about(str, "The current claim, while claimed.") | None
    claimed_by: str | None
    claimed_at: int | None
    lease_until: (
        about(
            int,
            "The claim holds through this instant; after it the claim has ended (ack and "
            "release are refused) and it is released once.",
        )
        | None
    )
    claims: about(int, "How many times it was claimed.")
    last_release: LastRelease | None
    acked_at: int | None
    acked_by: str | None
    deleted_at: int | None
    deleted_by: str | None


class Broadcast(Shape, kw_only=True):
    """The answer to a broadcast: the message as sent once, the number of recipients, and each
    recipient's copy id (the copies are in each inbox and in `GET /api/messages?broadcastId=`).
    The log stores the content once (ADR 0014)."""

    id: about(str, "The broadcast id.")
    broadcast_id: str
    sender: str = msgspec.field(name="from")
    to: str
    message_type: Literal[MESSAGE_TYPES] = msgspec.field(name="type")
    body: str
    recipient_count: kind(int, "", ge=1)
    recipients: about(list[str], "The recipients' agent ids, sorted.")
    message_ids: about(list[str], "Each recipient's copy, in the order of `recipients`.")
    subject: str | None = None
    meta: dict[str, Any] | None = None
    priority: Literal[PRIORITIES] | None = None
    status: Literal["pending"] | None = None
    created_at: int | None = None


class MessagePage(Shape):
    messages: list[Message]
    next: about(int, "Pass as `after` for the next page; null at the end.") | None


# -- the event stream's query (its parsing lives with the stream, relay.http.sse) ----------------------

EVENT_FAMILIES = ("agent", "orchestrator", "message", "system")
EventId = kind(
    str,
    "must be a log position P, or P.K",
    pattern=r"^[0-9]{1,18}(\.[0-9]{1,9})?$",
)


class EventsQuery(Shape, kw_only=True):
    since: about(EventId, "An event id to resume after (as Last-Event-ID): `P` or `P.K`.") | None = None
    types: (
        about(
            kind(
                str,
                "must be comma-separated families",
                pattern=f"^({'|'.join(EVENT_FAMILIES)})(,({'|'.join(EVENT_FAMILIES)}))*$",
            ),
            "Comma-separated families (the part of the event name before the dot): agent, "
            "orchestrator, message.",
        )
        | None
    ) = None
    orchestrator: about(Id, "Only this orchestrator's status events and commands.") | None = None
    agent: (
        about(
            Id,
            "Only this agent's own record and the messages to or from it (not with `orchestrator`).",
        )
        | None
    ) = None
    token: about(str, "The token, for browsers' EventSource (cannot set headers).") | None = None


# -- live output (issue 16, ADR 0031): a viewer's stream and a host's pushes, never stored -----------

MAX_OUTPUT_CHUNKS = 1000
MAX_TERMINAL_SIDE = 10_000
OUTPUT_KINDS = ("output", "snapshot")

TerminalText = about(
    kind(str, "is required and must be a string"),
    "Terminal text as the program wrote it, ANSI escape sequences kept (colours, cursor "
    "moves): write it to a terminal emulator such as xterm.js, not to HTML.",
)
TerminalSide = kind(
    int, f"must be an integer from 1 to {MAX_TERMINAL_SIDE}", ge=1, le=MAX_TERMINAL_SIDE
)
ChunkKind = about(
    kind(Literal[OUTPUT_KINDS], f"must be one of {', '.join(OUTPUT_KINDS)}"),
    "`snapshot`: the pane's recent history and screen, ending with the cursor put where it is "
    "(a terminal is reset before it); `output` (the default): what the program wrote since, "
    "in order.",
)
HostAt = about(Count, "Epoch milliseconds on the host when it read the output.")
# Declared here, not inside OutputChunk: its field named `kind` hides the function there.
ResetFlag = about(
    kind(bool, "must be true or false"),
    "snapshot only: output was lost before it (a new watch, a failed push, a burst over the "
    "limits), so viewers that already follow start over from it; otherwise only viewers "
    "waiting for a screen get it.",
)


class OutputChunk(Shape, kw_only=True):
    """One piece of an agent's terminal."""

    agent_id: Id
    kind: ChunkKind | None = None
    data: TerminalText
    reset: ResetFlag | None = None
    cols: TerminalSide | None = None
    rows: TerminalSide | None = None
    at: HostAt | None = None

    def wire(self) -> dict[str, Any]:
        """What a viewer's event carries (JSON data of `snapshot` and `output`)."""
        out: dict[str, Any] = {"data": self.data}
        if self.cols is not None:
            out["cols"] = self.cols
        if self.rows is not None:
            out["rows"] = self.rows
        if self.at is not None:
            out["at"] = self.at
        return out


class OutputPush(Shape):
    """A host's output for its watched agents (its own token). Sent only while the relay's
    orchestrator.watch frame lists the agent; at most pushBytes bytes, pushesPerSecond times
    and bytesPerSecond bytes a second (the frame's limits). Never stored."""

    chunks: kind(
        list[OutputChunk],
        f"is required and must be a list of at most {MAX_OUTPUT_CHUNKS} output chunks",
        max_length=MAX_OUTPUT_CHUNKS,
    )


class OutputPushResult(Shape):
    ok: Literal[True]
    delivered: about(int, "Chunks for agents someone watches here.")
    unwatched: about(list[str], "Agents that had chunks but no viewer (their chunks are dropped).")


class OutputLimits(Shape):
    """What a host must keep to (90 % of the relay's limits, so pacing never meets a 429)."""

    pushes_per_second: float
    bytes_per_second: int
    push_bytes: int


class OutputWatch(Shape):
    """The data of an `orchestrator.watch` frame on GET /api/events?orchestrator=ID: which of
    the host's agents someone watches now (push output for these and nothing for the others),
    which need a fresh snapshot, and the push limits. Sent when the set changes and each time
    the stream goes live; it has no `id:` (not a log event: it never moves Last-Event-ID)."""

    orchestrator_id: str
    agents: list[str]
    refresh: list[str]
    limits: OutputLimits


class OutputEvent(Shape, kw_only=True):
    """The data of a viewer's `snapshot` and `output` events (JSON, so any terminal text fits
    one SSE data line). A snapshot has cols and rows: size the terminal to them."""

    data: str
    cols: int | None = None
    rows: int | None = None
    at: int | None = None


class OutputEnd(Shape):
    """The data of a viewer's `end` event: why the relay ends the stream."""

    reason: str


class OutputStreamQuery(Shape):
    token: about(str, "The token, for browsers' EventSource (cannot set headers).") | None = None
