"""SMS templates in Liquid (python-liquid 2): checked completely when saved, rendered strictly when sent.

A campaign's template may only use the variables an `OrderStatusChanged` can fill (`TEMPLATE_VARIABLES`).
Saving analyses the template statically, so a typo such as ``{{ custmer.name }}`` is a 422 naming the
variable and its line, never a failed SMS later. Rendering uses `StrictUndefined` as a second guard.

Templates come from partners' marketers, so rendering one must stay cheap whatever it says: it runs on the
service's event loop, where a `{% for i in (1..100000000) %}` once froze health checks and consumers alike.
Every render is bounded (`LIMITS`): loop iterations in total, output bytes, local variables' size, nesting.
Saving also renders the template once with sample data (`SAMPLE_VARIABLES`), so a template that hits a limit
even then is refused; one that hits a limit only on a real order (a loop over a long name) fails that one
evaluation, fast, as `TemplateLimit`.

Most templates are text and plain variables (``{{ customer.name }}, заказ {{ order.id }}``): those are rendered by
joining the texts and the variables' values (`_PlainTemplate`), which is what Liquid outputs for them, at a tenth of
its cost (a backtest renders hundreds of thousands); anything else, and any value or output Liquid might treat
otherwise, is Liquid's. tests/test_templating.py compares both over many generated templates and values.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from liquid import BoundTemplate, Environment, RenderContext, StrictUndefined
from liquid.exceptions import LiquidError, LoopIterationLimitError, ResourceLimitError
from liquid.token import Token

from contracts.sms_text import TEMPLATE_VARIABLES

# What a save's trial render uses: ordinary values, as a typical order would have them.
SAMPLE_VARIABLES: dict[str, Any] = {
    "customer": {"name": "Анна"},
    "order": {"id": "100045", "amount": "1990.00", "currency": "RUB"},
    "from_status": {"code": "at_pickup_point", "name": "В пункте выдачи"},
    "to_status": {"code": "shipped", "name": "Отправлен"},
    "status_type": "delivery",
}


@dataclass(frozen=True)
class Limits:
    """What one render may cost. An SMS holds at most 1,600 characters, so none of this binds a sane template."""

    loop_iterations: int = 1_000  # every iteration of every loop of one render, sequential loops included
    filter_calls: int = 200  # every filter applied in one render (a filter can cost as much as a loop)
    output_bytes: int = 8_192  # UTF-8 bytes written, whitespace included (the text is stripped afterwards)
    local_namespace_bytes: int = 4_096  # what `assign` and `capture` hold (sys.getsizeof of the values)
    context_depth: int = 10  # scopes pushed at once (each loop pushes one)
    block_nesting: int = 10  # blocks nested in the source (checked when parsing)


LIMITS = Limits()


class FilterCallLimitError(ResourceLimitError):
    """More filters applied in one render than `LIMITS.filter_calls`."""


class _BoundedContext(RenderContext):
    """Counts every loop iteration and every filter application of a render against `LIMITS`.

    python-liquid's own `loop_iteration_limit` bounds the product of the lengths of the loops nested at one
    point, not their sum: a hundred loops in a row of 999 iterations each would pass it. Both checks run when
    a loop starts, before its first iteration, so a loop over a hundred million fails at once. Filters are
    counted because a loop of a few hundred iterations over a chain of `split | sort | join` on a
    few-kilobyte string costs minutes while staying within every other limit.
    """

    __slots__ = ("filter_calls", "iterations")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.iterations = 0
        self.filter_calls = 0

    def filter(self, name: str, token: Token | None) -> Callable[..., object]:
        """python-liquid looks a filter up each time it applies it."""
        self.filter_calls += 1
        if self.filter_calls > LIMITS.filter_calls:
            raise FilterCallLimitError("filter call limit reached", token=token)
        return super().filter(name, token)

    def raise_for_loop_limit(self, length: int = 1) -> None:
        super().raise_for_loop_limit(length)
        self.iterations += length
        if self.iterations > LIMITS.loop_iterations:
            raise LoopIterationLimitError("loop iteration limit reached", token=None)


class _BoundedTemplate(BoundTemplate):
    context_class = _BoundedContext


class _BoundedEnvironment(Environment):
    template_class = _BoundedTemplate
    loop_iteration_limit = LIMITS.loop_iterations
    output_stream_limit = LIMITS.output_bytes
    local_namespace_limit = LIMITS.local_namespace_bytes
    context_depth_limit = LIMITS.context_depth
    block_nesting_limit = LIMITS.block_nesting


_ENVIRONMENT = _BoundedEnvironment(undefined=StrictUndefined)


class TemplateProblem(Exception):
    """What is wrong with a template and on which line (1-based), when it is about one line."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line
        self.message = message


class TemplateLimit(TemplateProblem):
    """Rendering stopped at one of `LIMITS`: the template costs too much for this data (no one line to blame)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


_LIMIT_TEXT = {
    "LoopIterationLimitError": f"more than {LIMITS.loop_iterations} loop iterations",
    "FilterCallLimitError": f"more than {LIMITS.filter_calls} filter applications",
    "OutputStreamLimitError": f"more than {LIMITS.output_bytes} bytes of output",
    "LocalNamespaceLimitError": f"variables of more than {LIMITS.local_namespace_bytes} bytes",
    "ContextDepthError": f"scopes nested more than {LIMITS.context_depth} deep",
    "BlockNestingError": f"blocks nested more than {LIMITS.block_nesting} deep",
}


def _limit_problem(exc: ResourceLimitError) -> TemplateLimit:
    what = _LIMIT_TEXT.get(type(exc).__name__, str(exc.message or exc))
    return TemplateLimit(f"the template exceeds a limit: {what}")


def _line_of(source: str, index: int) -> int:
    return source.count("\n", 0, max(index, 0)) + 1


def _syntax_problem(source: str, exc: LiquidError) -> TemplateProblem:
    index = exc.token.start_index if exc.token is not None else 0
    if index < 0:  # the parser reached the end (an unclosed block): the problem shows on the last line
        index = len(source)
    return TemplateProblem(_line_of(source, index), str(exc.message or exc))


def check_template(source: str) -> None:
    """Raise `TemplateProblem` for the first syntax error, unknown variable or unknown filter, and
    `TemplateLimit` when rendering it with `SAMPLE_VARIABLES` already exceeds a limit."""
    try:
        template = _ENVIRONMENT.from_string(source)
        analysis = template.analyze()
    except ResourceLimitError as exc:
        raise _limit_problem(exc) from exc
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
    try:
        template.render(**SAMPLE_VARIABLES)
    except ResourceLimitError as exc:
        raise _limit_problem(exc) from exc
    except LiquidError:
        pass  # data-dependent; an order it fails for is a failed evaluation, as before


@functools.lru_cache(maxsize=1024)
def _compiled(source: str) -> BoundTemplate:
    """Parsing costs more than rendering, and a campaign renders its one template for every SMS."""
    return _ENVIRONMENT.from_string(source)


_PLAIN_OUTPUT = re.compile(r"\{\{ *([a-z_]+(?:\.[a-z_]+)?) *\}\}")


@dataclass(frozen=True)
class _PlainTemplate:
    """A template that is only texts (no braces) and plain variables (`{{ a.b }}`, no filter): `first`, then for
    each pair the path of a variable and the text after it."""

    first: str
    pairs: tuple[tuple[str, str], ...]

    def render(self, value_of: Callable[[str], object]) -> str | None:
        """What Liquid outputs (stripped), each variable's value `value_of` its path, or None where it might differ:
        a missing or non-text value (Liquid's error or its own stringification), a carriage return (its buffer
        translates newlines), an output over the limit (its error)."""
        pieces = [self.first]
        for path, text in self.pairs:
            value = value_of(path)
            if type(value) is not str:  # `type`: an ABC's isinstance costs more than this
                return None
            pieces += (value, text)
        output = "".join(pieces)
        if "\r" in output or (len(output) * 4 > LIMITS.output_bytes and len(output.encode()) > LIMITS.output_bytes):
            return None  # (UTF-8 takes at most 4 bytes a character: most texts need no encoding to be counted)
        return output.strip()


@functools.lru_cache(maxsize=1024)
def _plain(source: str) -> _PlainTemplate | None:
    texts, paths, start = [], [], 0
    for output in _PLAIN_OUTPUT.finditer(source):
        texts.append(source[start : output.start()])
        paths.append(output[1])
        start = output.end()
    texts.append(source[start:])
    if any("{" in text or "}" in text for text in texts) or any(path not in TEMPLATE_VARIABLES for path in paths):
        return None
    return _PlainTemplate(texts[0], tuple(zip(paths, texts[1:], strict=True)))


def render_plain(source: str, value_of: Callable[[str], object]) -> str | None:
    """A plain template's text (`_PlainTemplate`), its variables' values `value_of` their paths (`TEMPLATE_VARIABLES`),
    computed only for those it uses; None for any other template, or where Liquid might differ: `render` it."""
    plain = _plain(source)
    return None if plain is None else plain.render(value_of)


def _value_at(variables: Mapping[str, Any], path: str) -> object:
    """The value at a dotted path of nested dicts; None where there is none."""
    value: Any = variables
    for key in path.split("."):
        if type(value) is not dict or key not in value:
            return None
        value = value[key]
    return value


def render(source: str, variables: Mapping[str, Any]) -> str:
    """Render a checked template; raises `TemplateLimit` when it exceeds a limit on this data, and
    `TemplateProblem` if it still meets something undefined."""
    if (text := render_plain(source, lambda path: _value_at(variables, path))) is not None:
        return text
    try:
        return _compiled(source).render(**variables).strip()
    except ResourceLimitError as exc:
        raise _limit_problem(exc) from exc
    except LiquidError as exc:
        raise _syntax_problem(source, exc) from exc
