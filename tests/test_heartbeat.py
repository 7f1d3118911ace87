"""The node heartbeat (media_node/heartbeat.py) and the store sweeper (call_state/sweeper.py): periodic store
jobs that must keep going through a store outage, log it once, and reach the control plane's admission check."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from call_state.async_store import AsyncCallStore
from call_state.nodes import NodeHeartbeat
from call_state.settings import Settings
from call_state.sqlite_store import SqliteCallStore
from call_state.store import CallStore
from call_state.sweeper import StoreSweeper
from lambda_api.app import create_app
from media_node.heartbeat import HeartbeatPublisher, node_configured, node_snapshot
from tests.control_helpers import SECRET, Clock, FlakyStore, make_call, settings_for
from tests.standins.twilio_rest import TwilioRestStandIn
from tests.test_store_contract import NOW, make_record


@dataclass
class FakeNode:
    draining: bool = False
    active_calls: int = 0


SETTINGS = replace(Settings.from_env({"NODE_ID": "node-7", "MAX_CONCURRENT_CALLS": "40"}),
                   gemini_api_key="test-gemini-not-real", stream_token_secret=SECRET)  # fmt: skip


def test_snapshot_reads_the_node_and_its_settings() -> None:
    node = FakeNode(draining=True, active_calls=3)
    hb = node_snapshot(node, SETTINGS, clock=lambda: NOW, url="http://10.0.0.7:8081")
    assert hb == NodeHeartbeat("node-7", True, True, 3, 40, NOW, "http://10.0.0.7:8081")
    assert not node_configured(replace(SETTINGS, gemini_api_key=""))
    assert not node_configured(replace(SETTINGS, stream_token_secret="short"))


async def test_publishes_now_and_every_interval(any_store: CallStore) -> None:
    node, clock = FakeNode(), Clock()
    publisher = HeartbeatPublisher(AsyncCallStore(any_store), lambda: node_snapshot(node, SETTINGS, clock), 0.05)
    assert publisher.ttl_seconds == 1  # 2.5 intervals, at least a second
    task = asyncio.create_task(publisher.run())
    try:
        await asyncio.sleep(0.02)
        assert [h.active_calls for h in any_store.node_heartbeats(clock.now)] == [0]  # at once
        node.active_calls = 5
        await asyncio.sleep(0.15)
        assert [h.active_calls for h in any_store.node_heartbeats(clock.now)] == [5]  # and again
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_store_outage_is_logged_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyStore(SqliteCallStore(str(tmp_path / "calls.db")))
    publisher = HeartbeatPublisher(AsyncCallStore(flaky), lambda: node_snapshot(FakeNode(), SETTINGS), 10)
    flaky.fail["put_node_heartbeat"] = -1
    with caplog.at_level(logging.INFO, logger="media_node.heartbeat"):
        for _ in range(20):
            await publisher.publish_now()
        flaky.fail.clear()
        await publisher.publish_now()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "node heartbeat failed (OSError" in messages[0] and "after 20 failed attempts" in messages[1]
    assert [h.node_id for h in flaky.real.node_heartbeats(time.time())] == ["node-7"]  # written once it works


async def test_drain_start_reaches_make_call_at_once(twilio: TwilioRestStandIn, any_store: CallStore) -> None:
    """A standalone media node and a separate control plane (as on AWS) share only the store."""
    node, store = FakeNode(), AsyncCallStore(any_store)
    publisher = HeartbeatPublisher(store, lambda: node_snapshot(node, SETTINGS), interval_s=3600)
    await publisher.publish_now()  # the node starts
    app = create_app(settings_for(twilio), store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as api:
        assert (await make_call(api)).status_code == 201
        node.draining = True
        await publisher.publish_now()  # SIGTERM: the node publishes at drain start, not an hour later
        refused = await make_call(api)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
    assert twilio.dials == 1


async def test_sweeper_works_off_a_backlog_and_survives_an_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = SqliteCallStore(str(tmp_path / "calls.db"))
    for i in range(2500):  # more than one bounded pass
        real.create_call(make_record(f"old-{i}", ttl=10))
    flaky = FlakyStore(real)
    sweeper = StoreSweeper(AsyncCallStore(flaky), clock=lambda: NOW + 20)
    flaky.fail["sweep_expired"] = -1
    with caplog.at_level(logging.INFO, logger="call_state.sweeper"):
        assert await sweeper.sweep_once() == 0
        assert await sweeper.sweep_once() == 0
        flaky.fail.clear()
        assert await sweeper.sweep_once() >= 5000  # 2,500 calls and their status rows
    assert real.count_live_calls(0, 0) == 0 and real.list_calls(0).calls == []
    messages = [r.getMessage() for r in caplog.records]
    assert sum("store sweep failed" in m for m in messages) == 1 and any("works again" in m for m in messages)
