"""SMS templates in Liquid (python-liquid 2): checked completely when saved, rendered strictly when sent.

A campaign's template may only use the variables an `OrderStatusChanged` can fill (`TEMPLATE_VARIABLES`).
Saving analyses the template statically, so a typo such as ``{{ custmer.name }}`` is a 422 naming the
variable and its line, never a failed SMS later. Rendering uses `StrictUndefined` as a second guard.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from liquid import BoundTemplate, Environment, StrictUndefined
from liquid.exceptions import LiquidError

TEMPLATE_VARIABLES: tuple[str, ...] = (
    "customer.name",
    "order.id",
    "order.amount",
    "order.currency",
    "from_status.code",
    "from_status.name",
    "to_status.code",
    "to_status.name",
    "status_type",
)

_ENVIRONMENT = Environment(undefined=StrictUndefined)


class TemplateProblem(Exception):
    """What is wrong with a template and on which line (1-based)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def _line_of(source: str, index: int) -> int:
    return source.count("\n", 0, max(index, 0)) + 1


def _syntax_problem(source: str, exc: LiquidError) -> TemplateProblem:
    index = exc.token.start_index if exc.token is not None else 0
    if index < 0:  # the parser reached the end (an unclosed block): the problem shows on the last line
        index = len(source)
    return TemplateProblem(_line_of(source, index), str(exc.message or exc))


def check_template(source: str) -> None:
    """Raise `TemplateProblem` for the first syntax error, unknown variable or unknown filter."""
    try:
        template = _ENVIRONMENT.from_string(source)
        analysis = template.analyze()
    except LiquidError as exc:
        raise _syntax_problem(source, exc) from exc
    for root, uses in analysis.globals.items():
        for variable in uses:
            path = ".".join(str(segment) for segment in variable.segments)
            if path not in TEMPLATE_VARIABLES:
                known = ", ".join(TEMPLATE_VARIABLES)
                line = _line_of(source, variable.span.index)
                raise TemplateProblem(line, f"unknown variable '{path or root}'; known: {known}")
    for name, spans in analysis.filters.items():
        if name not in _ENVIRONMENT.filters:
            raise TemplateProblem(_line_of(source, spans[0].index), f"unknown filter '{name}'")


@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> BoundTemplate:
    """Parsing costs more than rendering, and a campaign renders its one template for every SMS."""
    return _ENVIRONMENT.from_string(source)


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render a checked template; raises `TemplateProblem` if it still meets something undefined."""
    try:
        return _compiled(source).render(**variables).strip()
    except LiquidError as exc:
        raise _syntax_problem(source, exc) from exc
