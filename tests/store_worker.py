"""One of the processes of tests/test_store_processes.py: writes the same calls as its sibling, prints its wins.

python -m tests.store_worker CALL_STORE ENDPOINT WORKER ROUNDS START_AT
"""

from __future__ import annotations

import json
import sys
import time

from call_state.record import CallFigures, CallStatus, StatusEvent, TranscriptTurn
from call_state.store import NoCapacity, StreamAlreadyClaimed, open_store
from tests.test_store_contract import NOW, make_record

SHARED = [f"shared-{i}" for i in range(4)]
STATUSES = [CallStatus.QUEUED, CallStatus.INITIATED, CallStatus.RINGING, CallStatus.IN_PROGRESS]
CAPACITY = 25


def main() -> None:
    url, endpoint, worker, rounds, start_at = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
        float(sys.argv[5]),
    )
    store = open_store(url, dynamodb_endpoint_url=endpoint or None, region="us-east-1")
    wins: dict[str, list[str]] = {"streams": [], "keys": [], "slots": [], "created": []}
    time.sleep(max(0.0, start_at - time.time()))  # both processes start together
    for i in range(rounds):
        call_id = SHARED[i % len(SHARED)]
        store.add_turn(call_id, TranscriptTurn(int(worker) * 100_000 + i, "caller", f"{worker}:{i}", NOW + i))
        store.update_call(call_id, NOW, figures=CallFigures(barge_ins=i))
        status = STATUSES[(i // len(SHARED) + int(worker)) % len(STATUSES)]  # every status, from both
        store.apply_status(call_id, StatusEvent(status, NOW + i, i), NOW)
        try:
            store.claim_stream(f"race-{i}", f"MZ{int(worker):016d}{i:016d}", f"node-{worker}", NOW)
            wins["streams"].append(f"race-{i}")
        except StreamAlreadyClaimed:
            pass
        if store.claim_idempotency_key(f"key-{i}", "h", f"call-{worker}", worker, NOW, 3600, 30).claimed:
            wins["keys"].append(f"key-{i}")
        if store.take_rate_slot("shared", i % 3, 10, int(NOW) + 60):
            wins["slots"].append(str(i % 3))
        try:
            store.create_call(make_record(f"cap-{worker}-{i}"), max_live=CAPACITY, live_since=NOW - 1)
            wins["created"].append(f"cap-{worker}-{i}")
        except NoCapacity:
            pass
    print(json.dumps(wins))


if __name__ == "__main__":
    main()
