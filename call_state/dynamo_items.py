"""Small helpers both DynamoDB modules share: attribute values, and the error code of a failed request."""

from __future__ import annotations

from typing import Any

CONDITION_FAILED = "ConditionalCheckFailedException"
TRANSACTION_CANCELED = "TransactionCanceledException"


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def page_through(query: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Every page of a Query (`query` is the client's bound method)."""
    items: list[dict[str, Any]] = []
    while True:
        page = query(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def partition_items(client: Any, table: str, pk: str, filter_expression: str, values: dict[str, Any]) -> list[Any]:
    """Every item of partition `pk` that passes `filter_expression` (its values besides `:p`), read consistently."""
    return page_through(client.query, TableName=table, KeyConditionExpression="pk = :p",
                        FilterExpression=filter_expression, ExpressionAttributeValues={":p": s(pk), **values},
                        ConsistentRead=True)  # fmt: skip
