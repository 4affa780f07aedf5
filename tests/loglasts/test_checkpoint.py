"""``relay audit checkpoint``: the C2SP text form, parsed back strictly; refused when nothing is sealed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from relay import merkle
from relay.audit import checkpoint
from relay.audit.epochs import EpochInfo, tree_head
from relay.cli import main
from tests.loglasts.epochlog import beats, run_relay


def test_render_and_parse_round_trip() -> None:
    es = [EpochInfo(k, 10 * k - 9, 10 * k, 10, f"{k:02x}" * 32, None, 0) for k in range(1, 4)]
    text = checkpoint.render(es)
    origin, size, root, blank, end = text.split("\n")
    assert origin == "relay-log/" + "01" * 16 and size == "3" and blank == end == ""
    head = checkpoint.parse(text)
    assert (head.size, head.root) == tree_head(es)
    assert base64.b64decode(root) == head.root
    # Extension lines and signature lines after the blank line are allowed and ignored.
    assert checkpoint.parse(text[:-1] + "ext\n\n— someone sig\n").root == head.root
    assert checkpoint.parse(checkpoint.render(es, "example.org/my-relay")).origin == "example.org/my-relay"
    with pytest.raises(ValueError):
        checkpoint.render(es, "two words")
    assert merkle.root([]) == merkle.EMPTY_ROOT


def test_no_checkpoint_before_the_first_epoch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    run_relay(data, [beats(20)], epoch_events=1000, seal_every=0)
    capsys.readouterr()
    assert main(["audit", "--data", str(data), "checkpoint", "--origin", "x/y"]) == 2
    assert "no epoch is sealed yet" in capsys.readouterr().err
