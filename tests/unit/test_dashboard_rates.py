"""The overview's rate chart: the change of each queue's delivered counter over time."""

from __future__ import annotations

from naq.dashboard.live import CHART_HEIGHT, CHART_WIDTH, HISTORY, Rates


def test_the_rate_is_the_counter_change_per_second_and_old_samples_go() -> None:
    rates = Rates(None, None)
    rates.add(1000.0, {"a": 0})
    rates.add(1005.0, {"a": 50, "b": 7})
    rates.add(1010.0, {"a": 50, "b": 17})
    assert rates.series("a") == [10.0, 0.0]
    assert rates.series("b") == [2.0]  # from its first sample on
    points, last = rates.chart("a")
    xs = [float(p.split(",")[0]) for p in points.split()]
    ys = [float(p.split(",")[1]) for p in points.split()]
    assert xs == [0.0, CHART_WIDTH]
    assert ys[0] < ys[1] <= CHART_HEIGHT  # the higher rate is drawn higher
    assert last == 0.0
    rates.add(1010.0 + HISTORY + 1, {"a": 60})
    assert [t for t, _ in rates.samples] == [1010.0 + HISTORY + 1]
    assert rates.chart("nothing") == ("", 0.0)


def test_a_counter_that_went_back_counts_as_no_work() -> None:
    rates = Rates(None, None)
    rates.add(0.0, {"a": 100})
    rates.add(5.0, {"a": 3})  # the queue's consumer was deleted and made again
    assert rates.series("a") == [0.0]
