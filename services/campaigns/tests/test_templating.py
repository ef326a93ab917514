"""A template of texts and plain variables is rendered by joining them (campaigns.templating `_PlainTemplate`): over
many generated templates and values, `render` gives exactly what Liquid gives, text or error."""

from __future__ import annotations

import random
from typing import Any

from liquid.exceptions import LiquidError, ResourceLimitError

from campaigns.templating import (
    TemplateProblem,
    _compiled,
    _limit_problem,
    _plain,
    _syntax_problem,
    _value_at,
    render,
    render_plain,
)
from contracts.sms_text import TEMPLATE_VARIABLES

TEXTS = ("", " ", "Спасибо!", ", заказ ", " доставлен.\n", "😀 ", "a\r\nb", "\t", "{", "}", "{ x }", "%}", "{%", "#")
VALUES = ("", "Анна", " Анна ", "1490.00", "x\ry", "a\r\nb", "{{ order.id }}", "😀" * 40, "Я" * 3000, "\n", "%")


def liquid_of(source: str, variables: dict[str, Any]) -> str | TemplateProblem:
    """`render` as it was: Liquid for every template."""
    try:
        return str(_compiled(source).render(**variables)).strip()
    except ResourceLimitError as exc:
        return _limit_problem(exc)
    except LiquidError as exc:
        return _syntax_problem(source, exc)


def rendered(source: str, variables: dict[str, Any]) -> str | TemplateProblem:
    try:
        return render(source, variables)
    except TemplateProblem as problem:
        return problem


def variables_from(rng: random.Random) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for path in TEMPLATE_VARIABLES:
        if rng.random() < 0.03:
            continue  # missing: Liquid's StrictUndefined error
        value: Any = rng.choice(VALUES) if rng.random() > 0.03 else rng.choice((None, 5, True, ["a"]))
        *parents, last = path.split(".")
        target = found
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = value
    return found


def template_from(rng: random.Random) -> str:
    pieces = []
    for _ in range(rng.randrange(0, 6)):
        pieces.append(rng.choice(TEXTS))
        path = rng.choice(TEMPLATE_VARIABLES)
        pieces.append("{{" + " " * rng.randrange(3) + path + " " * rng.randrange(3) + "}}")
    pieces.append(rng.choice(TEXTS))
    return "".join(pieces)


def test_plain_templates_render_as_liquid_renders_them() -> None:
    rng = random.Random(32)
    joined = 0
    for _ in range(4000):
        source, variables = template_from(rng), variables_from(rng)
        ours = rendered(source, variables)
        joined += render_plain(source, lambda path: _value_at(variables, path)) is not None  # noqa: B023 - called now
        theirs = liquid_of(source, variables)
        if isinstance(theirs, TemplateProblem):
            assert isinstance(ours, TemplateProblem) and str(ours) == str(theirs), (source, variables)
        else:
            assert ours == theirs, (source, variables)
    assert joined > 500  # the shortcut answered for many of them


def test_anything_else_is_liquids() -> None:
    for source in ("{{ customer.name | upcase }}", "{% if order.id %}x{% endif %}", "{{ customer.name }", "{# c #}"):
        assert _plain(source) is None
    assert _plain("{{ customer.name }}, заказ {{order.id}}") is not None
    assert render("{{ customer.name | upcase }}", {"customer": {"name": "anna"}}) == "ANNA"
