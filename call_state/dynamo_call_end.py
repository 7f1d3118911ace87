"""The end of a call in DynamoDB: which side has reported (attributes of the call's META item), and the webhook
outbox (items under one partition), for the all-in-one server on DynamoDB. On AWS the outbox is SQS instead.

- `media_done` / `status_done`: first the side marks itself (`SET media_done_at = if_not_exists(...)`, which also
  returns the item as it is now); then, if the pair looks complete, one conditional write sets `pair_done_at`
  only while it is absent and both sides are marked. Each side marks itself before it tries, so the later of two
  concurrent sides always sees the other; the condition lets exactly one of them (and no replay) complete it.
- jobs: `pk = WEBHOOKS`, `sk = <call_id>#<kind>`, with `due_at` and `lease_until`; a claim takes the lease with a
  conditional write on its old value, so two workers never attempt one job at once. The partition is read with
  one Query per claim (a handful of items: each is removed once its webhook is done).
`DynamoCallStore` delegates here.
"""

from __future__ import annotations

from typing import Any

from call_state.dynamo_items import CONDITION_FAILED, error_code, n, partition_items, s
from call_state.store import CallNotFound
from call_state.webhook_jobs import JobKind, WebhookJob

JOBS_PARTITION = "WEBHOOKS"
_MEDIA_COMPLETES = "attribute_exists(ended_at) AND attribute_exists(media_done_at)"
_STATUS_COMPLETES = (
    "attribute_exists(ended_at) AND (attribute_exists(media_done_at) OR attribute_not_exists(stream_sid))"
)


class DynamoCallEnd:
    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self.table = table

    def _conditional_update(self, **kwargs: Any) -> dict[str, Any] | None:
        """The item after the update, or None when the condition did not hold."""
        try:
            return dict(self._db.update_item(TableName=self.table, ReturnValues="ALL_NEW", **kwargs)["Attributes"])
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise
            return None

    @staticmethod
    def _meta(call_id: str) -> dict[str, Any]:
        return {"pk": s(f"CALL#{call_id}"), "sk": s("META")}

    def _mark(self, call_id: str, flag: str, completes: str, now: float) -> bool:
        item = self._conditional_update(
            Key=self._meta(call_id),
            UpdateExpression=f"SET {flag} = if_not_exists({flag}, :now)",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":now": n(now)},
        )
        if item is None:
            raise CallNotFound(call_id)
        looks_complete = "ended_at" in item and (
            "media_done_at" in item or (flag == "ended_at" and "stream_sid" not in item)
        )
        if "pair_done_at" in item or not looks_complete:
            return False
        done = self._conditional_update(
            Key=self._meta(call_id),
            UpdateExpression="SET pair_done_at = :now",
            ConditionExpression=f"attribute_not_exists(pair_done_at) AND {completes}",
            ExpressionAttributeValues={":now": n(now)},
        )
        return done is not None

    def media_done(self, call_id: str, now: float) -> bool:
        return self._mark(call_id, "media_done_at", _MEDIA_COMPLETES, now)

    def status_done(self, call_id: str, now: float) -> bool:
        return self._mark(call_id, "ended_at", _STATUS_COMPLETES, now)

    @staticmethod
    def _job_key(job: WebhookJob) -> dict[str, Any]:
        return {"pk": s(JOBS_PARTITION), "sk": s(job.key)}

    def add_webhook_job(self, job: WebhookJob, expires_at: int) -> None:
        item = {**self._job_key(job), "call_id": s(job.call_id), "kind": s(job.kind.value),
                "first_due_at": n(job.first_due_at), "due_at": n(job.first_due_at), "lease_until": n(0),
                "expires_at": n(expires_at)}  # fmt: skip
        try:
            self._db.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except Exception as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise

    def claim_webhook_jobs(self, now: float, lease_s: float, limit: int) -> list[WebhookJob]:
        due = "due_at <= :now AND lease_until <= :now"
        items = partition_items(self._db, self.table, JOBS_PARTITION, due, {":now": n(now)})
        claimed: list[WebhookJob] = []
        for item in sorted(items, key=lambda i: float(i["due_at"]["N"]))[: limit * 2]:
            if len(claimed) >= limit:
                break
            job = WebhookJob(item["call_id"]["S"], JobKind(item["kind"]["S"]), float(item["first_due_at"]["N"]))
            if self._conditional_update(
                Key=self._job_key(job),
                UpdateExpression="SET lease_until = :lease",
                ConditionExpression="lease_until = :old",
                ExpressionAttributeValues={":lease": n(now + lease_s), ":old": item["lease_until"]},
            ):
                claimed.append(job)
        return claimed

    def reschedule_webhook_job(self, job: WebhookJob, due_at: float) -> None:
        self._conditional_update(
            Key=self._job_key(job),
            UpdateExpression="SET due_at = :due, lease_until = :zero",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":due": n(due_at), ":zero": n(0)},
        )

    def remove_webhook_job(self, job: WebhookJob) -> None:
        self._db.delete_item(TableName=self.table, Key=self._job_key(job))
