"""router/health.py: a node that failed to answer is suspect until it
answers; one request at a time probes it, with a growing delay."""

from __future__ import annotations

import pytest

from router.health import NodeHealth


def test_a_failed_node_is_suspect_until_it_answers() -> None:
    h = NodeHealth(probe_after_s=1.0, max_probe_after_s=4.0)
    assert h.usable(7, 0.0) and not h.suspect(7)
    h.failed(7, 10.0)
    assert h.suspect(7) and h.suspects() == [7]
    assert not h.usable(7, 10.5)
    h.answered(7)
    assert not h.suspect(7) and h.usable(7, 10.5)


def test_one_request_takes_a_due_probe_and_the_delay_doubles_up_to_the_cap() -> None:
    h = NodeHealth(probe_after_s=1.0, max_probe_after_s=4.0)
    h.failed(3, 0.0)
    assert not h.usable(3, 0.99)
    assert h.usable(3, 1.0)  # the probe
    assert not h.usable(3, 1.0)  # others keep away while it is out
    h.failed(3, 1.2)  # the probe failed: next one 2 s later
    assert not h.usable(3, 3.1) and h.usable(3, 3.2)
    h.failed(3, 3.2)
    h.failed(3, 3.3)
    h.failed(3, 3.4)  # 4 s cap
    assert not h.usable(3, 7.3) and h.usable(3, 7.4)


def test_bad_probe_delays_are_refused() -> None:
    with pytest.raises(ValueError):
        NodeHealth(probe_after_s=0)
    with pytest.raises(ValueError):
        NodeHealth(probe_after_s=2, max_probe_after_s=1)


def test_word_of_a_leader_brings_the_probe_forward_unless_it_just_failed() -> None:
    h = NodeHealth(probe_after_s=1.0, max_probe_after_s=4.0)
    h.failed(5, 0.0)
    h.failed(5, 1.0)  # next probe at 3.0
    h.probe_soon(5, 1.5)  # failed 0.5 s ago: a replica may not have noticed yet
    assert not h.due(5, 1.5)
    h.probe_soon(5, 2.0)
    assert h.due(5, 2.0) and h.due(5, 2.0)  # due() reserves nothing
    assert h.usable(5, 2.0) and not h.usable(5, 2.1)  # usable() takes the one probe
    assert h.due(9, 0.0)  # a node never suspected
