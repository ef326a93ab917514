"""console.charts: SVG drawn from figures, read back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from console.charts import BASELINE, PLOT_TOP, ZERO_BAR, Bar, Flow, bar_chart, flow_chart, nice_ceiling

SVG = "{http://www.w3.org/2000/svg}"


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def days(*values: int) -> list[Bar]:
    return [Bar(f"Nov {n + 1}, 2026", value, f"{value:,}") for n, value in enumerate(values)]


def percent(text: str | None) -> float:
    assert text is not None and text.endswith("%"), text
    return float(text[:-1])


@pytest.mark.parametrize(("value", "top"), [(0, 1), (1, 1), (2, 2), (3, 5), (7, 10), (11, 20), (50, 50), (501, 1000)])
def test_the_scale_ends_on_a_round_number(value: int, top: int) -> None:
    assert nice_ceiling(value) == top


def test_a_bar_chart_is_one_named_and_described_image() -> None:
    svg = parse(bar_chart("paid-days", "Orders entering Paid", "3 in total", days(2, 0, 1), str))

    assert svg.get("role") == "img"
    title, desc = svg.find(f"{SVG}title"), svg.find(f"{SVG}desc")
    assert title is not None and title.text == "Orders entering Paid" and title.get("id") == "paid-days-title"
    assert desc is not None and desc.text == "3 in total" and desc.get("id") == "paid-days-desc"
    assert svg.get("aria-labelledby") == "paid-days-title" and svg.get("aria-describedby") == "paid-days-desc"
    assert svg.get("width") == "100%" and svg.get("viewBox") is None  # text keeps its size at any width


def test_every_day_has_a_bar_and_a_day_with_none_shows_as_zero() -> None:
    svg = parse(bar_chart("c", "t", "d", days(5, 0, 2, 0), str))

    bars = svg.findall(f"{SVG}rect")
    assert [int(b.get("data-value", "")) for b in bars] == [5, 0, 2, 0]
    heights = [float(b.get("height", "")) for b in bars]
    assert heights[0] == BASELINE - PLOT_TOP  # 5, the scale's top, reaches it
    assert [b.get("class") for b in bars] == ["bar", "bar zero", "bar", "bar zero"]
    assert heights[1] == heights[3] == ZERO_BAR
    assert all(float(b.get("y", "")) + float(b.get("height", "")) == pytest.approx(BASELINE) for b in bars)
    tooltips = [b.findtext(f"{SVG}title") for b in bars]
    assert tooltips == ["Nov 1, 2026: 5", "Nov 2, 2026: 0", "Nov 3, 2026: 2", "Nov 4, 2026: 0"]


def test_bars_are_as_tall_as_their_value_and_fit_side_by_side_across_the_width() -> None:
    svg = parse(bar_chart("c", "t", "d", days(*range(31)), lambda n: f"<{n}>"))

    bars = svg.findall(f"{SVG}rect")
    plot = BASELINE - PLOT_TOP
    for value, bar in enumerate(bars[1:], start=1):
        assert float(bar.get("height", "")) == pytest.approx(value / 50 * plot, abs=0.1)  # the scale's top: 50
    lefts = [percent(b.get("x")) for b in bars]
    rights = [percent(b.get("x")) + percent(b.get("width")) for b in bars]
    assert lefts == sorted(lefts) and lefts[0] > 0 and rights[-1] < 100
    assert all(right <= left for right, left in zip(rights, lefts[1:], strict=False))  # no bar over the next
    labels = [t.text for t in svg.findall(f"{SVG}text")]
    assert labels == ["<50>", "Nov 1, 2026", "Nov 31, 2026"]  # the scale (escaped on the way), the first, the last


def test_a_bar_chart_of_no_days_and_one_day() -> None:
    assert parse(bar_chart("c", "t", "d", [], str)).findall(f"{SVG}rect") == []
    one = parse(bar_chart("c", "t", "d", days(0), str))
    assert [t.text for t in one.findall(f"{SVG}text")] == ["1", "Nov 1, 2026"]


def test_text_is_escaped_and_never_markup() -> None:
    hostile = '<script>alert("x")</script> & "quotes"'
    markup = bar_chart('a"b', hostile, hostile, [Bar(hostile, 1, hostile)], str)

    assert "<script>" not in markup
    svg = parse(markup)  # still well-formed
    assert svg.findtext(f"{SVG}title") == hostile and svg.get("id") == 'a"b'


def test_a_flow_chart_draws_each_move_as_long_as_its_share() -> None:
    flows = [
        Flow("Paid → Delivered", 2, 2 / 3, "2 · 67%"),
        Flow("Paid → Completed", 1, 1 / 3, "1 · 33%"),
        Flow("Odd", 5, 1.5, "5"),  # a share past 100% is drawn as 100%
    ]
    svg = parse(flow_chart("moves", "Moves", "3 moves", flows))

    assert svg.get("role") == "img" and svg.findtext(f"{SVG}desc") == "3 moves"
    rows = svg.findall(f"{SVG}g")
    assert [int(r.get("data-value", "")) for r in rows] == [2, 1, 5]
    assert [t.text for t in rows[0].findall(f"{SVG}text")] == ["Paid → Delivered", "2 · 67%"]
    shares = [percent(r.find(f"{SVG}rect[@class='share']").get("width")) for r in rows]  # type: ignore[union-attr]
    assert shares == [pytest.approx(66.667), pytest.approx(33.333), 100.0]
    tops = [float(r.find(f"{SVG}rect[@class='track']").get("y", "")) for r in rows]  # type: ignore[union-attr]
    assert tops == sorted(set(tops))  # one row under the other
    assert int(svg.get("height", "")) >= tops[-1] + 12
