"""The usage publisher keeps records while the control plane is away, delivers them when it
returns, and stops for good when its credential is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence

import pytest

from core.tasks import spawn
from proxy.control_link import CredentialRefused, Delivery, LinkDown
from proxy.publisher import BATCH, UsagePublisher
from tests.control.test_usage_ingest import record


class FakeControl:
    """Answers like the control plane's usage route; `down` makes it unreachable."""

    def __init__(self) -> None:
        self.down = False
        self.refuse_credential = False
        self.refuse_ids: set[str] = set()
        self.batches: list[list[str]] = []
        self.attempts = 0
        self.failed = asyncio.Event()

    async def send(self, records: Sequence[bytes]) -> Delivery:
        self.attempts += 1
        if self.refuse_credential:
            raise CredentialRefused("refused")
        if self.down:
            self.failed.set()
            raise LinkDown("ClientConnectorError")
        ids = [json.loads(r)["record_id"] for r in records]
        self.batches.append(ids)
        refused = [{"record_id": i, "reason": "invalid"} for i in ids if i in self.refuse_ids]
        return Delivery(len(records) - len(refused), refused)

    @property
    def delivered(self) -> list[str]:
        return [record_id for batch in self.batches for record_id in batch]


@contextlib.asynccontextmanager
async def running(publisher: UsagePublisher) -> AsyncIterator[None]:
    task = spawn(publisher.run(), name="publisher-under-test")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_records_published_while_the_control_plane_is_down_arrive_when_it_returns() -> None:
    control = FakeControl()
    publisher = UsagePublisher(control.send, linger=0)
    async with running(publisher):
        first = record("s1")
        publisher.publish(first)
        assert await publisher.flush(5)

        control.down = True
        second = record("s1")
        publisher.publish(second)
        await asyncio.wait_for(control.failed.wait(), 5)
        assert publisher.pending == 1  # kept, not lost

        control.down = False
        assert await publisher.flush(15)
    assert control.delivered == [first.record_id, second.record_id]


async def test_a_batch_holds_at_most_BATCH_records_and_none_is_sent_twice() -> None:
    control = FakeControl()
    publisher = UsagePublisher(control.send, linger=0)
    records = [record("s1") for _ in range(BATCH * 2 + 5)]
    for r in records:
        publisher.publish(r)
    async with running(publisher):
        assert await publisher.flush(10)
    assert max(len(batch) for batch in control.batches) <= BATCH
    assert control.delivered == [r.record_id for r in records]


async def test_a_refused_credential_stops_the_publisher_and_tells_the_session_once() -> None:
    control = FakeControl()
    control.refuse_credential = True
    reasons: list[str] = []
    publisher = UsagePublisher(control.send, linger=0, on_refused=reasons.append)
    async with running(publisher):
        publisher.publish(record("s1"))
        assert not await publisher.flush(5)  # answers at once: nothing more will leave
        publisher.publish(record("s1"))
        assert not await publisher.flush(0.1)
    assert reasons == ["credential_refused"]
    assert control.attempts == 1
    assert publisher.fenced
    assert publisher.pending == 2


async def test_a_record_the_control_plane_refuses_is_dropped_not_retried() -> None:
    control = FakeControl()
    bad, good = record("s1"), record("s1")
    control.refuse_ids = {bad.record_id}
    publisher = UsagePublisher(control.send, linger=0)
    async with running(publisher):
        publisher.publish(bad)
        publisher.publish(good)
        assert await publisher.flush(5)
    assert control.attempts == 1
    assert publisher.refused == 1


@pytest.mark.parametrize("capacity", [3])
async def test_a_full_buffer_drops_the_oldest_and_counts_it(capacity: int) -> None:
    control = FakeControl()
    publisher = UsagePublisher(control.send, capacity=capacity, linger=0)
    records = [record("s1") for _ in range(capacity + 2)]
    for r in records:
        publisher.publish(r)
    assert publisher.dropped == 2
    async with running(publisher):
        assert await publisher.flush(5)
    assert control.delivered == [r.record_id for r in records[2:]]


async def test_records_linger_to_travel_together_and_a_flush_cuts_the_wait() -> None:
    control = FakeControl()
    publisher = UsagePublisher(control.send, linger=30)  # longer than any test may wait
    async with running(publisher):
        records = [record("s1") for _ in range(3)]
        for r in records:
            publisher.publish(r)
        assert await publisher.flush(5)  # at once: the flush does not wait out the linger
    assert control.batches == [[r.record_id for r in records]]  # one request for all three


async def test_a_record_waits_as_the_json_the_control_plane_is_sent() -> None:
    posted: list[bytes] = []

    async def send(records: Sequence[bytes]) -> Delivery:
        posted.extend(records)
        return Delivery(len(records), [])

    publisher = UsagePublisher(send, linger=0)
    sent = record("s1")
    async with running(publisher):
        publisher.publish(sent)
        assert await publisher.flush(5)
    assert [json.loads(data) for data in posted] == [sent.as_dict()]
