"""The weekly chart: a real PNG whose pixels follow the data."""

from __future__ import annotations

import io
from datetime import date, timedelta

import numpy as np
from matplotlib.image import imread

from runbooks.chart import PNG_SIGNATURE, render_chart
from runbooks.report import DailyPoint

DAYS = [date(2026, 11, 23) + timedelta(days=i) for i in range(7)]


def week(p95: list[float | None], availability: float | None = 99.95) -> list[DailyPoint]:
    return [
        DailyPoint(d, availability, (v or 0) / 3 if v else None, v) for d, v in zip(DAYS, p95, strict=True)
    ]


def pixels(png: bytes) -> np.ndarray:
    return imread(io.BytesIO(png), format="png")


def test_the_chart_is_a_png_of_the_requested_size() -> None:
    png = render_chart(week([300, 320, 310, 900, 2500, 400, 350]))
    assert png.startswith(PNG_SIGNATURE)
    assert pixels(png).shape[:2] == (400, 800)


def test_the_pixels_change_with_the_data() -> None:
    calm = pixels(render_chart(week([300, 320, 310, 300, 310, 300, 320])))
    spike = pixels(render_chart(week([300, 320, 310, 300, 4000, 300, 320])))
    outage = pixels(render_chart(week([300, 320, 310, 300, 310, 300, 320], availability=97.0)))

    assert calm.shape == spike.shape == outage.shape
    assert np.abs(calm - spike).sum() > 100
    assert np.abs(calm - outage).sum() > 100


def test_a_week_without_data_still_draws() -> None:
    assert render_chart(week([None] * 7, availability=None)).startswith(PNG_SIGNATURE)
    assert render_chart([]).startswith(PNG_SIGNATURE)
