"""What the control plane coordinates on, in DynamoDB: Idempotency-Key claims, pacing windows, node heartbeats.

Items, all in the call table and all with `expires_at` (TTL):
- `pk = IDEM#<key>`, `sk = IDEM`: body_hash, call_id, state (claimed | dialling | done), lease_until, holder,
  response (JSON, once answered). Every change is a conditional write, so one request per key dials.
- `pk = RATE#<key>`, `sk = <window>`: `used`, incremented only while below the limit (`ADD` with a condition).
- `pk = NODES`, `sk = <node_id>`: one heartbeat per media node; one Query reads the fleet.
`DynamoCallStore` delegates its methods here.
"""

from __future__ import annotations

import json
import math
from typing import Any

from call_state.dynamo_items import CONDITION_FAILED, error_code, n, partition_items, s
from call_state.nodes import NodeHeartbeat
from call_state.store import IdempotencyClaim, IdemState

NODES_PARTITION = "NODES"


class DynamoCoordination:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    @staticmethod
    def _idem_key(key: str) -> dict[str, Any]:
        return {"pk": s(f"IDEM#{key}"), "sk": s("IDEM")}

    def _conditional(self, op: str, **kwargs: Any) -> bool:
        """A conditional write: False when its condition did not hold, any other error raised."""
        try:
            getattr(self._db, op)(TableName=self.table, **kwargs)
            return True
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            return False

    def claim_idempotency_key(
        self, key: str, body_hash: str, call_id: str, holder: str, now: float, ttl_seconds: int, lease_seconds: float
    ) -> IdempotencyClaim:
        lease_until = now + lease_seconds
        item = {
            **self._idem_key(key),
            "body_hash": s(body_hash),
            "call_id": s(call_id),
            "state": s(IdemState.CLAIMED.value),
            "lease_until": n(lease_until),
            "holder": s(holder),
            "expires_at": n(int(now) + ttl_seconds),
        }
        if self._conditional(
            "put_item",
            Item=item,
            ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now",
            ExpressionAttributeValues={":now": n(now)},
        ):
            return IdempotencyClaim(True, body_hash, call_id, None, IdemState.CLAIMED, lease_until, holder)
        held = self._read_key(key)
        if held.state is IdemState.CLAIMED and held.lease_until <= now and held.body_hash == body_hash:
            # Its holder died (or stalled) before dialling: take over, with the same call id, if still so.
            if self._conditional(
                "update_item",
                Key=self._idem_key(key),
                UpdateExpression="SET holder = :h, lease_until = :l",
                ConditionExpression="holder = :old AND #st = :claimed AND attribute_not_exists(#r)",
                ExpressionAttributeNames={"#st": "state", "#r": "response"},
                ExpressionAttributeValues={
                    ":h": s(holder),
                    ":l": n(lease_until),
                    ":old": s(held.holder),
                    ":claimed": s(IdemState.CLAIMED.value),
                },
            ):
                return IdempotencyClaim(True, body_hash, held.call_id, None, IdemState.CLAIMED, lease_until, holder)
            return self._read_key(key)
        return held

    def _read_key(self, key: str) -> IdempotencyClaim:
        held = self._db.get_item(TableName=self.table, Key=self._idem_key(key), ConsistentRead=True).get("Item", {})
        response = held.get("response", {}).get("S")
        state = IdemState.DONE if response is not None else IdemState(held.get("state", {}).get("S", "claimed"))
        return IdempotencyClaim(
            False,
            held.get("body_hash", {}).get("S", ""),
            held.get("call_id", {}).get("S", ""),
            None if response is None else json.loads(response),
            state,
            float(held.get("lease_until", {}).get("N", "0")),
            held.get("holder", {}).get("S", ""),
        )

    def mark_idempotency_dialling(self, key: str, holder: str, now: float) -> bool:
        return self._conditional(
            "update_item",
            Key=self._idem_key(key),
            UpdateExpression="SET #st = :dialling",
            ConditionExpression="holder = :h AND #st = :claimed AND attribute_not_exists(#r)",
            ExpressionAttributeNames={"#st": "state", "#r": "response"},
            ExpressionAttributeValues={
                ":h": s(holder),
                ":claimed": s(IdemState.CLAIMED.value),
                ":dialling": s(IdemState.DIALLING.value),
            },
        )

    def complete_idempotency_key(self, key: str, response: dict[str, Any]) -> None:
        self._db.update_item(
            TableName=self.table,
            Key=self._idem_key(key),
            UpdateExpression="SET #r = :r, #st = :done",
            ExpressionAttributeNames={"#r": "response", "#st": "state"},
            ExpressionAttributeValues={":r": s(json.dumps(response)), ":done": s(IdemState.DONE.value)},
        )

    def release_idempotency_key(self, key: str, holder: str) -> None:
        self._conditional(
            "delete_item",
            Key=self._idem_key(key),
            ConditionExpression="holder = :h AND attribute_not_exists(#r)",
            ExpressionAttributeNames={"#r": "response"},
            ExpressionAttributeValues={":h": s(holder)},
        )

    def take_rate_slot(self, key: str, window: int, limit: int, expires_at: int) -> bool:
        return self._conditional(
            "update_item",
            Key={"pk": s(f"RATE#{key}"), "sk": s(str(window))},
            UpdateExpression="ADD used :one SET expires_at = :e",
            ConditionExpression="attribute_not_exists(used) OR used < :limit",
            ExpressionAttributeValues={":one": n(1), ":e": n(expires_at), ":limit": n(limit)},
        )

    def put_node_heartbeat(self, heartbeat: NodeHeartbeat, ttl_seconds: int) -> None:
        fresh_until = heartbeat.at + ttl_seconds
        self._db.put_item(
            TableName=self.table,
            Item={
                "pk": s(NODES_PARTITION),
                "sk": s(heartbeat.node_id),
                "heartbeat": s(json.dumps(heartbeat.to_dict())),
                "fresh_until": n(fresh_until),
                "expires_at": n(math.ceil(fresh_until) + 3600),  # TTL: a node gone an hour disappears
            },
        )

    def node_heartbeats(self, now: float) -> list[NodeHeartbeat]:
        items = partition_items(self._db, self.table, NODES_PARTITION, "fresh_until > :now", {":now": n(now)})
        return [NodeHeartbeat.from_dict(json.loads(i["heartbeat"]["S"])) for i in items]
