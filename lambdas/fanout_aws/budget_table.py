"""The fleet's Hermes budget (pacing ``shared``) as one DynamoDB item.

Every write is one conditional ``UpdateItem`` (a lease of a slice takes one, or two
when another instance moved the budget in between; a give-back or a repair one), so no
read-modify-write races between instances, and a call never waits long on the table: 1 s
timeouts and two tries, then ``BudgetUnavailable`` and the instance paces alone at its
static share for a few seconds (``fanout_core.fleet_budget``). Numbers are epoch seconds with nanoseconds.
"""

from __future__ import annotations

from typing import Any

from fanout_core.fleet_budget import TAT_EPS, BudgetItem, BudgetUnavailable, reserve_by_two_writes

KEY = {"pk": {"S": "hermes"}}
"""One item per table: the stack makes one table per environment, and an environment
crawls one Hermes with one token."""
CLIENT_CONFIG: dict[str, Any] = {
    "connect_timeout": 1,
    "read_timeout": 1,
    "retries": {"total_max_attempts": 2, "mode": "standard"},
}
"""botocore settings: a slow table must cost a call milliseconds, not the task its time."""


def _n(x: float) -> dict[str, str]:
    # Nanoseconds: an increment rounded to microseconds could round down, above R.
    return {"N": f"{x:.9f}"}


def _item(attrs: dict[str, Any]) -> BudgetItem:
    def num(name: str) -> float:
        value = attrs.get(name, {}).get("N")
        return float(value) if value is not None else 0.0

    return BudgetItem(num("tat"), num("w_max"), num("cut_at"), num("hold_until"))


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


class DynamoBudgetStore:
    """``BudgetStore`` over a table whose partition key is ``pk`` (string)."""

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table
        self.writes = 0
        self._seen_tat = 0.0
        self._seen_busy = False

    def _update(self, **kwargs: Any) -> BudgetItem | None:
        """One UpdateItem; None when its condition failed."""
        self.writes += 1
        try:
            out = self._client.update_item(TableName=self._table, Key=KEY, ReturnValues="ALL_NEW", **kwargs)
        except Exception as exc:  # botocore's ClientError, timeouts, connection errors
            if _code(exc) == "ConditionalCheckFailedException":
                return None
            raise BudgetUnavailable(
                f"budget table {self._table}: {_code(exc) or type(exc).__name__}"
            ) from None
        return _item(out.get("Attributes", {}))

    def reserve(self, *, floor: float, increment: float) -> BudgetItem:
        # Busy budget (tat >= floor): tat += increment. Idle (tat < floor, or no item yet):
        # tat = floor + increment. The last write that succeeded, or the last tat seen,
        # picks the write likely to succeed (a failed condition is billed too).
        item, self._seen_busy = reserve_by_two_writes(
            busy=lambda: self._update(
                UpdateExpression="SET tat = tat + :inc",
                ConditionExpression="tat >= :floor",
                ExpressionAttributeValues={":inc": _n(increment), ":floor": _n(floor)},
            ),
            idle=lambda: self._update(
                UpdateExpression="SET tat = :start",
                ConditionExpression="attribute_not_exists(tat) OR tat < :floor",
                ExpressionAttributeValues={":start": _n(floor + increment), ":floor": _n(floor)},
            ),
            busy_first=self._seen_busy or self._seen_tat >= floor,
        )
        self._seen_tat = item.tat
        return item

    def cut(self, *, now: float, sent_at: float, w_max: float, hold_until: float) -> BudgetItem | None:
        values = {":w": _n(w_max), ":now": _n(now), ":sent": _n(sent_at)}
        expression = "SET w_max = :w, cut_at = :now"
        if hold_until:
            expression += ", hold_until = :hold"
            values[":hold"] = _n(hold_until)
        return self._update(
            UpdateExpression=expression,
            ConditionExpression="attribute_not_exists(cut_at) OR cut_at < :sent",
            ExpressionAttributeValues=values,
        )

    def push(self, *, tat: float) -> None:
        self._update(
            UpdateExpression="SET tat = :tat",
            ConditionExpression="attribute_not_exists(tat) OR tat < :tat",
            ExpressionAttributeValues={":tat": _n(tat)},
        )

    def give_back(self, *, end: float, amount: float) -> bool:
        # "Still end": within TAT_EPS, as a float of epoch seconds cannot hold nanoseconds.
        return (
            self._update(
                UpdateExpression="SET tat = tat - :amount",
                ConditionExpression="tat BETWEEN :lo AND :hi",
                ExpressionAttributeValues={
                    ":amount": _n(amount),
                    ":lo": _n(end - TAT_EPS),
                    ":hi": _n(end + TAT_EPS),
                },
            )
            is not None
        )

    def repair(self, *, seen: float, tat: float, hold_until: float) -> BudgetItem | None:
        item = self._update(
            UpdateExpression="SET tat = :tat, hold_until = :hold",
            ConditionExpression="tat BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":tat": _n(tat),
                ":hold": _n(hold_until),
                ":lo": _n(seen - TAT_EPS),
                ":hi": _n(seen + TAT_EPS),
            },
        )
        if item is not None:
            self._seen_tat = item.tat
        return item
