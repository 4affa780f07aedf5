"""Enrollment, grants and token facts of the orchestrator aggregate: no IO, no clock (ADR 0013)."""

from __future__ import annotations

import pytest
from eventsourcing.application import Application

from relay.domain.errors import ForbiddenError, NotFoundError
from relay.domain.orchestrator import Orchestrator, path_inside


def topics(o: Orchestrator) -> list[str]:
    return [type(e).TOPIC for e in o.collect_events()]  # type: ignore[attr-defined]


def enrolled(base_dir: str = "/srv/a", token_hash: str = "h1") -> Orchestrator:
    return Orchestrator.enroll_new("o1", "host-1", base_dir, ["claude"], token_hash, 1_000)


def by_host(o: Orchestrator, base_dir: str, token_hash: str = "h1", at: int = 2_000) -> None:
    o.reregister_by_host("host-1", base_dir, ["claude"], [], {}, token_hash, at)


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("/srv/a", True),
        ("/srv/a/", True),
        ("/srv/a/b/c", True),
        ("/srv/a/./b", True),
        ("/srv/a2", False),
        ("/srv/", False),
        ("/", False),
        ("/srv/a/..", False),
        ("/srv/a/../b", False),
        ("//srv/a", True),
        ("srv/a", False),
    ],
)
def test_inside_is_decided_by_components_never_by_string_prefix(path: str, inside: bool) -> None:
    assert path_inside("/srv/a", path) is inside


def test_enrollment_creates_it_offline_with_its_grant_and_the_same_id() -> None:
    o = enrolled()
    assert topics(o) == ["OrchestratorEnrolled"]
    assert (o.status, o.base_dir, o.grant, o.token_hash) == ("offline", "/srv/a", "/srv/a", "h1")
    assert o.id == Orchestrator.create_id("o1")


def test_enrollment_replays_from_the_store() -> None:
    app: Application = Application()
    o = enrolled()
    by_host(o, "/srv/a/sub")
    o.rotate_token("h2", 3_000)
    app.save(o)
    again = app.repository.get(o.id)
    assert (again.status, again.base_dir, again.grant, again.token_hash) == (
        "online", "/srv/a/sub", "/srv/a", "h2"
    )


def test_a_host_narrows_but_never_widens_its_grant_and_records_nothing_when_refused() -> None:
    o = enrolled()
    o.collect_events()
    by_host(o, "/srv/a/sub")
    assert topics(o) == ["OrchestratorReregisteredByHost"]
    assert (o.base_dir, o.grant, o.status) == ("/srv/a/sub", "/srv/a", "online")
    by_host(o, "/srv/a")  # back up to the grant: the grant is the admin's
    for wider in ("/", "/srv", "/srv/a2", "/srv/a/../b"):
        with pytest.raises(ForbiddenError, match="baseDir"):
            by_host(o, wider)
    assert topics(o) == ["OrchestratorReregisteredByHost"]


def test_a_rotated_or_revoked_token_cannot_reregister() -> None:
    o = enrolled()
    o.rotate_token("h2", 2_000)
    with pytest.raises(ForbiddenError, match="rotated or revoked"):
        by_host(o, "/srv/a", token_hash="h1")
    assert o.revoke_token(3_000) is True
    assert o.revoke_token(3_001) is False  # nothing more to revoke: nothing recorded
    with pytest.raises(ForbiddenError):
        by_host(o, "/srv/a", token_hash="")
    assert topics(o)[1:] == ["OrchestratorTokenRotated", "OrchestratorTokenRevoked"]


def test_admin_registration_and_reenrollment_set_the_grant() -> None:
    o = Orchestrator(
        orchestrator_id="o1", hostname="h", base_dir="/srv/a", providers=["claude"],
        env_keys=[], meta={}, token_hash="h1", at=1,
    )
    assert o.grant == "/srv/a"
    o.reenroll("h", "/srv/b", ["codex"], "h2", 2)
    assert (o.grant, o.base_dir, o.providers, o.token_hash, o.status) == (
        "/srv/b", "/srv/b", ["codex"], "h2", "online"
    )
    o.remove(3)
    with pytest.raises(NotFoundError):
        o.rotate_token("h3", 4)
    o.reenroll("h", "/srv/c", ["claude"], "h3", 5)
    assert (o.status, o.grant, o.managed_agents) == ("offline", "/srv/c", [])


def test_a_snapshot_from_before_grants_uses_its_base_dir() -> None:
    o = enrolled()
    del o.__dict__["granted_base_dir"]  # what an older snapshot restores
    assert o.grant == "/srv/a"
    with pytest.raises(ForbiddenError):
        by_host(o, "/")
