"""The DynamoDB call store: one table, one partition per call.

Items under `pk = CALL#<id>`: `sk = META` (the record head, status, version, the end-of-call marks),
`STATUS#<status>` (each status event once), `TURN#<index>` (one per transcript turn), `STREAM#<time>#<event>` and
`TOOL#<id>`; so no item grows with call length (400 KB item limit). Idempotency keys live under `pk = IDEM#<key>`,
webhook jobs under `pk = WEBHOOKS` (call_state/dynamo_call_end.py). A GSI `by_created` (`gsi1pk = CALLS`,
`gsi1sk = <created_at>#<id>`) lists calls newest first. Every item carries `expires_at` (TTL); reads filter on it
because TTL deletion is lazy. Writes are conditional: create-once, one item per status, optimistic `version` on
META so concurrent callbacks never lose an update.
"""

from __future__ import annotations

import json
from typing import Any

from call_state.dynamo_call_end import DynamoCallEnd
from call_state.dynamo_coordination import DynamoCoordination
from call_state.dynamo_items import CONDITION_FAILED, TRANSACTION_CANCELED, error_code, n, page_through, s
from call_state.record import (
    TERMINAL_STATUSES,
    CallRecord,
    CallStatus,
    StatusEvent,
    StreamEvent,
    ToolCallRecord,
    TranscriptTurn,
)
from call_state.status_rules import StatusUpdate, apply_status, history_order
from call_state.store import (
    MAX_PAGE_SIZE,
    CallExists,
    CallNotFound,
    CallPage,
    CallStore,
    NoCapacity,
    StreamAlreadyClaimed,
)
from call_state.store_codec import decode_cursor, encode_cursor, head_changes, record_from_parts, record_head

GSI_NAME = "by_created"
LIST_PARTITION = "CALLS"
MAX_RETRIES = 8


def table_definition(table_name: str) -> dict[str, Any]:
    """CreateTable arguments; infra/ provisions the same keys."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk", "gsi1pk", "gsi1sk")],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": GSI_NAME,
                "KeySchema": [
                    {"AttributeName": "gsi1pk", "KeyType": "HASH"},
                    {"AttributeName": "gsi1sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


def _sort_key(created_at: float, call_id: str) -> str:
    return f"{created_at:020.6f}#{call_id}"


class DynamoCallStore(CallStore):
    def __init__(self, client: Any, table_name: str) -> None:
        self._db = client
        self.table = table_name
        self.coordination: DynamoCoordination = DynamoCoordination(client, table_name)
        self.call_end: DynamoCallEnd = DynamoCallEnd(client, table_name)

    @classmethod
    def from_table_name(
        cls, table_name: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> DynamoCallStore:
        import boto3  # lazy: the SQLite path never pays for it

        client = boto3.client("dynamodb", endpoint_url=endpoint_url or None, region_name=region or None)
        return cls(client, table_name)

    def create_table(self) -> None:
        """For local use and tests; on AWS the CDK app owns the table."""
        self._db.create_table(**table_definition(self.table))

    def _key(self, call_id: str, sk: str) -> dict[str, Any]:
        return {"pk": s(f"CALL#{call_id}"), "sk": s(sk)}

    def _child(self, call_id: str, sk: str, field: str, body: dict[str, Any], expires_at: int) -> dict[str, Any]:
        return {**self._key(call_id, sk), field: s(json.dumps(body)), "expires_at": n(expires_at)}

    def create_call(self, record: CallRecord, *, max_live: int | None = None, live_since: float = 0.0) -> None:
        # No transaction can count a GSI: concurrent creates at the boundary may each see one slot free. The
        # window is one round trip; API Gateway throttling bounds how many requests share it.
        if max_live is not None and self.count_live_calls(live_since, record.created_at) >= max_live:
            raise NoCapacity(f"{max_live} live calls")
        meta = {
            **self._key(record.call_id, "META"),
            "head": s(json.dumps(record_head(record))),
            "status": s(record.status.value),
            "version": n(0),
            "created_at": n(record.created_at),
            "expires_at": n(record.expires_at),
            "gsi1pk": s(LIST_PARTITION),
            "gsi1sk": s(_sort_key(record.created_at, record.call_id)),
        }
        items: list[dict[str, Any]] = [
            {"Put": {"TableName": self.table, "Item": meta, "ConditionExpression": "attribute_not_exists(pk)"}}
        ]
        for event in record.status_history:
            item = self._child(
                record.call_id, f"STATUS#{event.status.value}", "event", event.to_dict(), record.expires_at
            )
            items.append({"Put": {"TableName": self.table, "Item": item}})
        try:
            self._db.transact_write_items(TransactItems=items)
        except Exception as exc:
            if error_code(exc) in (TRANSACTION_CANCELED, CONDITION_FAILED):
                raise CallExists(record.call_id) from exc
            raise

    def _meta(self, call_id: str, now: float) -> dict[str, Any] | None:
        item = self._db.get_item(TableName=self.table, Key=self._key(call_id, "META"), ConsistentRead=True).get("Item")
        if item is None or float(item["expires_at"]["N"]) <= now:
            return None
        return dict(item)

    def _items(self, call_id: str, prefix: str = "") -> list[dict[str, Any]]:
        """The call's items whose sort key starts with `prefix` (every item of the call without one)."""
        condition, values = "pk = :pk", {":pk": s(f"CALL#{call_id}")}
        if prefix:
            condition, values = condition + " AND begins_with(sk, :p)", {**values, ":p": s(prefix)}
        return page_through(self._db.query, TableName=self.table, KeyConditionExpression=condition,
                            ExpressionAttributeValues=values, ConsistentRead=True)  # fmt: skip

    def _history(self, call_id: str) -> tuple[StatusEvent, ...]:
        events = [StatusEvent.from_dict(json.loads(i["event"]["S"])) for i in self._items(call_id, "STATUS#")]
        return tuple(sorted(events, key=history_order))

    @staticmethod
    def _head_of(meta: dict[str, Any]) -> dict[str, Any]:
        head: dict[str, Any] = json.loads(meta["head"]["S"])
        head["status"] = meta["status"]["S"]
        head["stream_sid"] = meta.get("stream_sid", {}).get("S", "")
        head["media_node"] = meta.get("media_node", {}).get("S", "")
        return head

    def get_call(self, call_id: str, now: float) -> CallRecord | None:
        """One consistent Query for the whole partition (META and every child item), split by sort-key prefix."""
        items = self._items(call_id)
        meta = next((i for i in items if i["sk"]["S"] == "META"), None)
        if meta is None or float(meta["expires_at"]["N"]) <= now:
            return None

        def parts(prefix: str, field: str) -> list[dict[str, Any]]:
            return [json.loads(i[field]["S"]) for i in items if i["sk"]["S"].startswith(prefix)]

        history = sorted((StatusEvent.from_dict(d) for d in parts("STATUS#", "event")), key=history_order)
        turns = [TranscriptTurn.from_dict(d) for d in parts("TURN#", "turn")]
        streams = [StreamEvent.from_dict(d) for d in parts("STREAM#", "event")]
        tools = [ToolCallRecord.from_dict(d) for d in parts("TOOL#", "call")]
        return record_from_parts(self._head_of(meta), history, turns, streams, tools)

    def list_calls(self, now: float, limit: int = 20, cursor: str | None = None) -> CallPage:
        limit = max(1, min(limit, MAX_PAGE_SIZE))
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI_NAME,
            "KeyConditionExpression": "gsi1pk = :p",
            "FilterExpression": "expires_at > :now",
            "ExpressionAttributeValues": {":p": s(LIST_PARTITION), ":now": n(now)},
            "ScanIndexForward": False,
            "Limit": limit + 1,
        }
        if cursor:
            created_at, call_id = decode_cursor(cursor)
            kwargs["ExclusiveStartKey"] = {
                **self._key(call_id, "META"),
                "gsi1pk": s(LIST_PARTITION),
                "gsi1sk": s(_sort_key(created_at, call_id)),
            }
        found: list[dict[str, Any]] = []
        while len(found) <= limit:  # the filter runs after Limit, so a page can come back short
            page = self._db.query(**kwargs)
            found.extend(page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        calls = [record_from_parts(self._head_of(i), [], [], []) for i in found[:limit]]
        more = len(found) > limit
        return CallPage(calls, encode_cursor(calls[-1].created_at, calls[-1].call_id) if more and calls else None)

    def count_live_calls(self, since: float, now: float) -> int:
        """A COUNT query on `by_created` over calls created after `since` (the read cost grows with the calls
        created in that window, not with the table)."""
        terminal = {f":t{i}": s(st.value) for i, st in enumerate(sorted(TERMINAL_STATUSES))}
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": GSI_NAME,
            "KeyConditionExpression": "gsi1pk = :p AND gsi1sk > :since",
            "FilterExpression": f"NOT (#s IN ({', '.join(terminal)})) AND expires_at > :now",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {
                ":p": s(LIST_PARTITION),
                ":since": s(_sort_key(since, "")),
                ":now": n(now),
                **terminal,
            },
            "Select": "COUNT",
        }
        count = 0
        while True:
            page = self._db.query(**kwargs)
            count += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return count
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def apply_status(self, call_id: str, event: StatusEvent, now: float) -> StatusUpdate:
        for _ in range(MAX_RETRIES):
            meta = self._meta(call_id, now)
            if meta is None:
                raise CallNotFound(call_id)
            update = apply_status(CallStatus(meta["status"]["S"]), self._history(call_id), event)
            if not update.history_changed:
                return update
            expires_at = int(meta["expires_at"]["N"])
            status_item = self._child(call_id, f"STATUS#{event.status.value}", "event", event.to_dict(), expires_at)
            try:
                self._db.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self.table,
                                "Item": status_item,
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        {
                            "Update": {
                                "TableName": self.table,
                                "Key": self._key(call_id, "META"),
                                "UpdateExpression": "SET #s = :s, #v = #v + :one",
                                "ConditionExpression": "#v = :v",
                                "ExpressionAttributeNames": {"#s": "status", "#v": "version"},
                                "ExpressionAttributeValues": {
                                    ":s": s(update.status.value),
                                    ":v": meta["version"],
                                    ":one": n(1),
                                },
                            }
                        },
                    ]
                )
                return update
            except Exception as exc:
                if error_code(exc) != TRANSACTION_CANCELED:
                    raise
        raise RuntimeError(f"status update for {call_id} kept conflicting")

    def update_call(self, call_id: str, now: float, **fields: Any) -> None:
        changes = head_changes(**fields)
        for _ in range(MAX_RETRIES):
            meta = self._meta(call_id, now)
            if meta is None:
                raise CallNotFound(call_id)
            head = {**json.loads(meta["head"]["S"]), **changes}
            try:
                self._db.update_item(
                    TableName=self.table,
                    Key=self._key(call_id, "META"),
                    UpdateExpression="SET #h = :h, #v = #v + :one",
                    ConditionExpression="#v = :v",
                    ExpressionAttributeNames={"#h": "head", "#v": "version"},
                    ExpressionAttributeValues={":h": s(json.dumps(head)), ":v": meta["version"], ":one": n(1)},
                )
                return
            except Exception as exc:
                if error_code(exc) != CONDITION_FAILED:
                    raise
        raise RuntimeError(f"update of {call_id} kept conflicting")

    def claim_stream(self, call_id: str, stream_sid: str, media_node: str, now: float) -> None:
        try:
            self._db.update_item(
                TableName=self.table,
                Key=self._key(call_id, "META"),
                UpdateExpression="SET stream_sid = :s, media_node = :n",
                ConditionExpression="attribute_exists(pk) AND expires_at > :now AND attribute_not_exists(stream_sid)",
                ExpressionAttributeValues={":s": s(stream_sid), ":n": s(media_node), ":now": n(now)},
            )
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            if self._meta(call_id, now) is None:
                raise CallNotFound(call_id) from None
            raise StreamAlreadyClaimed(call_id) from None

    def _expiry(self, call_id: str) -> int:
        item = self._db.get_item(
            TableName=self.table, Key=self._key(call_id, "META"), ProjectionExpression="expires_at"
        ).get("Item")
        if item is None:
            raise CallNotFound(call_id)
        return int(item["expires_at"]["N"])

    def add_turn(self, call_id: str, turn: TranscriptTurn) -> None:
        item = self._child(call_id, f"TURN#{turn.index:06d}", "turn", turn.to_dict(), self._expiry(call_id))
        self._db.put_item(TableName=self.table, Item=item)

    def add_tool_call(self, call_id: str, call: ToolCallRecord) -> None:
        item = self._child(call_id, f"TOOL#{call.tool_call_id}", "call", call.to_dict(), self._expiry(call_id))
        self._db.put_item(TableName=self.table, Item=item)

    def add_stream_event(self, call_id: str, event: StreamEvent) -> None:
        sk = f"STREAM#{event.at:020.6f}#{event.event}"
        item = self._child(call_id, sk, "event", event.to_dict(), self._expiry(call_id))
        self._db.put_item(TableName=self.table, Item=item)

    def sweep_expired(self, now: float) -> int:
        """DynamoDB's TTL deletes expired items (within days); reads already skip them."""
        return 0
