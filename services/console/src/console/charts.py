"""Charts as SVG drawn on the server: no script, nothing to load, the same on every browser.

Pure functions from figures to markup (no I/O, no language: every text arrives already written in the user's
language and formats). Each chart is an `<svg role="img">` named by its `<title>` and described by its `<desc>`,
so a screen reader announces one picture with its summary; the page shows the same figures as a table beside it.

Positions across are percentages of the chart's width and there is no viewBox: the chart fills its column at any
width (a phone's or a 1366 px screen's) while its text keeps the page's font size instead of shrinking with the
drawing. Colours come from console.css by class (the Content-Security-Policy allows no inline style).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# A bar chart's geometry, in pixels down from its top.
BARS_HEIGHT = 164
PLOT_TOP = 22  # the scale's top line; its figure sits above it
BASELINE = 136
AXIS_LABELS = 156
ZERO_BAR = 2  # a day with none still shows: a stub on the baseline, not a gap
BAR_FILL = 0.7  # of each day's slot; the rest is the gap between bars

# A flow chart's rows.
FLOW_ROW = 46
FLOW_TEXT = 16
FLOW_BAR_TOP = 24
FLOW_BAR = 12


@dataclass(frozen=True)
class Bar:
    """One day of a bar chart: its label ("Nov 7, 2026") and its value, written as the user reads it."""

    label: str
    value: int
    text: str


@dataclass(frozen=True)
class Flow:
    """One move of a flow chart: its label ("Paid → Delivered"), its count, its share of its group (0 to 1) and
    the figures as the user reads them ("2 · 67%")."""

    label: str
    value: int
    share: float
    text: str


def nice_ceiling(value: int) -> int:
    """The scale's top: the smallest of 1, 2, 5, 10, 20, 50... that is at least `value`."""
    step = 1
    while True:
        for multiple in (1, 2, 5):
            if step * multiple >= value:
                return step * multiple
        step *= 10


def bar_chart(chart_id: str, title: str, description: str, bars: Sequence[Bar], number: Callable[[int], str]) -> Markup:
    """One bar per day, the first and the last day named under them and the scale's top above; each bar's own
    `<title>` names its day and value (a tooltip under the pointer)."""
    top = nice_ceiling(max((bar.value for bar in bars), default=0))
    slot = 100 / max(len(bars), 1)
    parts = [
        _open(chart_id, "bars", title, description, BARS_HEIGHT),
        f'<line class="grid" x1="0" x2="100%" y1="{PLOT_TOP}" y2="{PLOT_TOP}"/>',
        f'<text class="scale" x="0" y="{PLOT_TOP - 6}">{escape(number(top))}</text>',
    ]
    for index, bar in enumerate(bars):
        height = max(bar.value / top * (BASELINE - PLOT_TOP), ZERO_BAR)
        kind = "bar" if bar.value else "bar zero"
        parts.append(
            f'<rect class="{kind}" x="{_pct(slot * (index + (1 - BAR_FILL) / 2))}" width="{_pct(slot * BAR_FILL)}" '
            f'y="{BASELINE - height:.1f}" height="{height:.1f}" data-value="{bar.value}">'
            f"<title>{escape(bar.label)}: {escape(bar.text)}</title></rect>"
        )
    parts.append(f'<line class="axis" x1="0" x2="100%" y1="{BASELINE}" y2="{BASELINE}"/>')
    if bars:
        parts.append(f'<text class="day" x="0" y="{AXIS_LABELS}">{escape(bars[0].label)}</text>')
    if len(bars) > 1:
        parts.append(f'<text class="day" x="100%" y="{AXIS_LABELS}" text-anchor="end">{escape(bars[-1].label)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def flow_chart(chart_id: str, title: str, description: str, flows: Sequence[Flow]) -> Markup:
    """One row per move: its label and figures above a bar as long as its share, over a track standing for all
    (100%) of the moves out of the same status."""
    parts = [_open(chart_id, "flows", title, description, FLOW_ROW * len(flows))]
    for index, flow in enumerate(flows):
        y = index * FLOW_ROW
        width = min(max(flow.share, 0.0), 1.0) * 100
        parts.append(
            f'<g class="flow" data-value="{flow.value}">'
            f'<text class="label" x="0" y="{y + FLOW_TEXT}">{escape(flow.label)}</text>'
            f'<text class="figures" x="100%" y="{y + FLOW_TEXT}" text-anchor="end">{escape(flow.text)}</text>'
            f'<rect class="track" x="0" width="100%" y="{y + FLOW_BAR_TOP}" height="{FLOW_BAR}"/>'
            f'<rect class="share" x="0" width="{_pct(width)}" y="{y + FLOW_BAR_TOP}" height="{FLOW_BAR}"/>'
            "</g>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _open(chart_id: str, kind: str, title: str, description: str, height: int) -> str:
    ident = escape(chart_id)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {kind}" id="{ident}" role="img" width="100%" '
        f'height="{height}" aria-labelledby="{ident}-title" aria-describedby="{ident}-desc">'
        f'<title id="{ident}-title">{escape(title)}</title><desc id="{ident}-desc">{escape(description)}</desc>'
    )


def _pct(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + "%"
