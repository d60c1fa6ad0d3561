"""``award``: an order that becomes SHIPPED earns its customer a badge, once."""

from __future__ import annotations

import os
from typing import Any

from .dynamodb import client


def award(event: dict[str, Any], context: Any) -> None:
    for record in event["Records"]:
        if record["eventName"] != "MODIFY":
            continue
        new = record["dynamodb"]["NewImage"]
        old = record["dynamodb"].get("OldImage", {})
        if new["status"]["S"] != "SHIPPED" or old.get("status", {}).get("S") == "SHIPPED":
            continue
        ddb = client()
        try:
            ddb.put_item(
                TableName=os.environ["BADGES_TABLE"],
                Item={
                    "pk": {"S": new["customer"]["S"]},
                    "order": {"S": new["pk"]["S"]},
                    "badge": {"S": "first-shipment"},
                    "by": {"S": context.function_name},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            pass  # the customer has the badge already (or this is a retry)
