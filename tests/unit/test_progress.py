"""The progress line: counts, rate, ETA, and in-place redraws."""

from __future__ import annotations

import io

from ddbcdc.progressbar import ProgressBar, format_duration, format_progress


def test_format_duration() -> None:
    assert format_duration(0) == "0:00"
    assert format_duration(75.2) == "1:15"
    assert format_duration(3725) == "1:02:05"


def test_format_progress_with_total_shows_bar_rate_and_eta() -> None:
    line = format_progress(250, 1000, 5.0, label="load", width=10)
    assert line == "load [##--------] 250/1000  25% 50/s elapsed 0:05 ETA 0:15"


def test_format_progress_without_total_or_rate() -> None:
    assert format_progress(0, None, 0.0) == "0 0/s elapsed 0:00"
    assert "ETA --:--" in format_progress(0, 10, 0.0)
    assert "ETA" not in format_progress(10, 10, 2.0)


def test_progress_bar_throttles_redraws_and_ends_the_line() -> None:
    now = [0.0]
    out = io.StringIO()
    with ProgressBar(100, stream=out, min_interval=0.5, clock=lambda: now[0]) as bar:
        bar.update(1)
        now[0] = 0.1
        bar.update(2)  # too soon: not drawn
        now[0] = 1.0
        bar.update(50)
    text = out.getvalue()
    assert text.count("\r") == 3  # first, third, and the final draw on close
    assert "2/100" not in text and "50/100" in text and text.endswith("\n")
