"""The weekly report's chart: response time and availability per day, as PNG bytes.

matplotlib with the Agg backend (no display; a Figure object, never pyplot's global state, so two
reports drawn at once do not share a figure). Days without data are gaps, not zeros.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class ChartLabels:
    """Axis labels in the report's language (the caller translates)."""

    title: str = "Garden DX API"
    response: str = "response time (ms)"
    availability: str = "availability (%)"
    average: str = "average"
    p95: str = "p95"


class ChartDay(Protocol):
    """One day of the chart (runbooks.report.DailyPoint has these)."""

    @property
    def day(self) -> date: ...
    @property
    def availability_percent(self) -> float | None: ...
    @property
    def avg_ms(self) -> float | None: ...
    @property
    def p95_ms(self) -> float | None: ...


def _value(v: float | None) -> float:
    return math.nan if v is None else v


def render_chart(
    days: Sequence[ChartDay],
    *,
    labels: ChartLabels | None = None,
    response_target_ms: float | None = 2000.0,
    availability_target: float | None = 99.9,
    dpi: int = 100,
) -> bytes:
    """PNG of avg and p95 response time (left axis) and availability (right axis) per day."""
    text = labels or ChartLabels()
    xs = [d.day.strftime("%m-%d") for d in days]
    avg = [_value(d.avg_ms) for d in days]
    p95 = [_value(d.p95_ms) for d in days]
    avail = [_value(d.availability_percent) for d in days]
    figure = Figure(figsize=(8, 4), dpi=dpi)
    FigureCanvasAgg(figure)
    left = figure.add_subplot()
    left.set_title(text.title)
    left.plot(xs, avg, marker="o", color="tab:blue", label=text.average)
    left.plot(xs, p95, marker="s", color="tab:orange", label=text.p95)
    if response_target_ms is not None:
        left.axhline(response_target_ms, color="tab:orange", linestyle=":", linewidth=1)
    left.set_ylabel(text.response)
    left.set_ylim(bottom=0)
    left.legend(loc="upper left", fontsize="small")
    right = left.twinx()
    right.bar(xs, avail, alpha=0.2, color="tab:green")
    if availability_target is not None:
        right.axhline(availability_target, color="tab:green", linestyle=":", linewidth=1)
    right.set_ylabel(text.availability)
    right.set_ylim(min([a for a in avail if not math.isnan(a)] + [99.0]) - 0.5, 100.2)
    # Fixed margins: tight_layout measured every label first and cost about a third of the render.
    figure.subplots_adjust(left=0.09, right=0.9, top=0.9, bottom=0.1)
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()
