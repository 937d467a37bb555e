"""The launcher's heartbeat watchdog, on a clock the test moves."""

from __future__ import annotations

from proxy.keepalive import KeepaliveWatchdog
from tests.factories import Clock


def test_not_armed_until_the_first_beat_then_expires_past_the_grace() -> None:
    clock, lost = Clock(), []
    watchdog = KeepaliveWatchdog(30, lost.append, clock=clock)
    clock.now += 3600
    assert not watchdog.expired()  # no launcher has beaten yet: nothing to lose
    watchdog.beat()
    clock.now += 30
    assert not watchdog.expired()
    clock.now += 0.5
    assert watchdog.expired()
    watchdog.beat()
    assert not watchdog.expired()
    assert lost == []


async def test_the_watch_reports_the_loss_once_and_ends() -> None:
    clock, lost = Clock(), []
    watchdog = KeepaliveWatchdog(0.04, lost.append, clock=clock)
    watchdog.beat()
    clock.now += 1  # the heartbeat stopped long ago
    await watchdog.watch()  # returns once it has seen the loss
    assert lost == ["keepalive_lost"]
