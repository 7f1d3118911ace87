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
