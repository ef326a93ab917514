"""The product documentation's example: the statuses a demo partner defines (used by `make run` and tests)."""

from __future__ import annotations

from typing import Any

DEMO_PARTNER = "demo"

# (type, code, Russian display name, English name), in display order within each type.
EXAMPLE_STATUSES: tuple[tuple[str, str, str, str], ...] = (
    ("general", "accepted", "Принят", "Accepted"),
    ("general", "agreed", "Согласован", "Agreed"),
    ("general", "in_progress", "В работе", "In progress"),
    ("general", "completed", "Выполнен", "Completed"),
    ("delivery", "at_pickup_point", "В пункте выдачи", "At pickup point"),
    ("delivery", "shipped", "Отгружен", "Shipped"),
    ("delivery", "at_delivery_point", "В пункте доставки", "At delivery point"),
    ("delivery", "delivered", "Доставлен", "Delivered"),
    ("payment", "invoice_issued", "Счёт выставлен", "Invoice issued"),
    ("payment", "awaiting_payment", "Ожидает оплаты", "Awaiting payment"),
    ("payment", "paid", "Оплачен", "Paid"),
)

ANALYTICS = {"completed", "delivered", "paid"}


def example_status_list() -> list[dict[str, Any]]:
    """The body of `PUT /v1/statuses` that defines the example; the first status of each type is initial."""
    seen: set[str] = set()
    body = []
    for position, (status_type, code, name_ru, name_en) in enumerate(EXAMPLE_STATUSES):
        body.append(
            {
                "code": code,
                "type": status_type,
                "name": name_ru,
                "localized_names": {"en": name_en},
                "position": position,
                "is_initial": status_type not in seen,
                "include_in_analytics": code in ANALYTICS,
            }
        )
        seen.add(status_type)
    return body
