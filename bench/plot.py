"""Charts and tables of what ``make bench`` measured, drawn from the JSON its scripts write.

Why a separate step: the benchmarks print their tables as they go and write the same
numbers as JSON; drawing from the JSON means a chart can be redrawn (or compared)
without measuring again, and the benchmarks need no plotting library.

    python bench/plot.py [RESULTS_DIR]      # default bench/results

Reads ``throughput.json`` (bench/throughput.py), ``executors.json`` (bench/executors.py)
and ``latency.json`` (bench/latency.py) from RESULTS_DIR, and writes beside them:

* ``throughput.png``: jobs/s of each executor and of the asyncio supervisor with and
  without results, against the raw nats-py limits of fetch + ack and fetch + KV put +
  ack (medians; the raw limits from the throughput run of the same sitting);
* ``latency.png``: enqueue-to-start and enqueue-to-result p50/p99/p99.9 against the
  offered load, per executor, with raw nats-py publish-to-receive at the same rates
  and the targets;
* ``summary.md``: the same numbers as tables.

A missing JSON file leaves its chart out, and says so. matplotlib (the ``bench``
extra) draws with the Agg backend: no display needed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latency import PERCENTILES, TARGET_LOAD, TARGETS_MS

WIDTH, HEIGHT, DPI = 10.0, 6.0, 100
"""Every chart's size in inches, and its resolution: 1000 x 600 pixels."""


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    rate: float
    source: str
    """Which benchmark measured it: the bars of one colour come from one run."""


def load(results: Path) -> dict[str, Any]:
    """The JSON reports found in ``results``, by name (``throughput``, ...)."""
    found: dict[str, Any] = {}
    for name in ("throughput", "executors", "latency"):
        path = results / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def throughput_bars(reports: dict[str, Any]) -> tuple[list[Bar], dict[str, float]]:
    """The rates to draw as bars, and the raw limits to draw as lines."""
    bars: list[Bar] = []
    limits: dict[str, float] = {}
    if "throughput" in reports:
        t = reports["throughput"]
        rates = t["median"]["rates"]
        source = f"throughput.py, asyncio -c {t['concurrency']}"
        bars.append(Bar("asyncio, no result", rates["process"], source))
        bars.append(Bar("asyncio, results kept", rates["process_with_results"], source))
        limits["raw fetch + ack"] = rates["raw_fetch_ack"]
        limits["raw fetch + KV put + ack"] = rates["raw_fetch_put_ack"]
    if "executors" in reports:
        e = reports["executors"]
        rates = e["median"]["rates"]
        source = "executors.py, no result"
        for variant in e["executors"]["noop"]:  # "process.c2": executor and concurrency
            executor, _, concurrency = variant.partition(".c")
            label = f"{executor} -c {concurrency}, no result"
            bars.append(Bar(label, rates[f"noop.{variant}"], source))
    if "latency" in reports:
        lat = reports["latency"]
        for executor, rate in lat["median"]["capacity"].items():
            source = "latency.py capacity, results kept"
            label = f"{executor} -c {lat['concurrency'][executor]}, results kept"
            bars.append(Bar(label, rate, source))
    return bars, limits


def machine_note(reports: dict[str, Any], when: datetime.date) -> str:
    """Date, CPUs, Python and nats-server, as far as the reports tell them."""
    seen: dict[str, Any] = {}
    for report in reports.values():
        for key in ("cpus", "python", "nats_server"):
            if report.get(key) and key not in seen:
                seen[key] = report[key]
    parts = [when.isoformat(), f"{platform.system()} {platform.machine()}"]
    if "cpus" in seen:
        parts.append(f"{seen['cpus']} CPUs")
    if "python" in seen:
        parts.append(f"Python {seen['python']}")
    if "nats_server" in seen:
        parts.append(f"nats-server {seen['nats_server']}")
    return ", ".join(parts)


def reference_limit(bar: Bar, limits: dict[str, float]) -> str | None:
    """The raw limit a bar compares with: with a KV put per message if it keeps results."""
    name = "raw fetch + KV put + ack" if "results kept" in bar.label else "raw fetch + ack"
    return name if name in limits else None


def plot_throughput(bars: list[Bar], limits: dict[str, float], note: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(WIDTH, HEIGHT), dpi=DPI)
    sources = list(dict.fromkeys(bar.source for bar in bars))
    colours = plt.get_cmap("tab10")
    ys = list(range(len(bars)))[::-1]
    for y, bar in zip(ys, bars, strict=True):
        colour = colours(sources.index(bar.source))
        ax.barh(y, bar.rate, color=colour, label=bar.source)
        text = f" {bar.rate:,.0f}"
        reference = reference_limit(bar, limits)
        if reference is not None:
            text += f" ({bar.rate / limits[reference]:.2f} of {reference})"
        ax.text(bar.rate, y, text, va="center", fontsize=8)
    for index, (label, rate) in enumerate(limits.items()):
        ax.axvline(rate, color="black", linestyle=("--", ":")[index % 2], linewidth=1)
        ax.text(rate, len(bars) - 0.4, f" {label}\n {rate:,.0f}/s", fontsize=8, va="bottom")
    ax.set_yticks(ys, [bar.label for bar in bars])
    ax.set_xlabel("jobs processed per second (median)")
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:,.0f}")
    ax.set_title(f"naq throughput per executor against the raw nats-py limit\n{note}", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    ax.set_ylim(-0.6, len(bars) + 0.6)
    top = max([bar.rate for bar in bars] + list(limits.values()))
    ax.set_xlim(0, top * 1.35)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency(report: dict[str, Any], note: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    phases = report["median"]["phases"]
    executors = list(dict.fromkeys(p["executor"] for p in phases))
    fig, axes = plt.subplots(
        1, len(executors), figsize=(WIDTH, HEIGHT), dpi=DPI, sharey=True, squeeze=False
    )
    styles = {"start": "-", "result": "--", "raw": ":"}
    names = {
        "start": "enqueue-to-start",
        "result": "enqueue-to-result",
        "raw": "raw publish-to-receive",
    }
    colours = {"p50": "tab:blue", "p99": "tab:orange", "p99.9": "tab:red"}
    for ax, executor in zip(axes[0], executors, strict=True):
        mine = [p for p in phases if p["executor"] == executor]
        loads = [p["load"] * 100 for p in mine]
        for part, style in styles.items():
            for name, _ in PERCENTILES:
                values = [p[part][name] for p in mine]
                ax.plot(
                    loads,
                    values,
                    linestyle=style,
                    marker="o",
                    markersize=3,
                    color=colours[name],
                    label=f"{names[part]} {name}",
                )
        for name, limit in TARGETS_MS.items():
            ax.plot(
                [TARGET_LOAD * 100],
                [limit],
                marker="_",
                markersize=20,
                color=colours[name],
                linestyle="none",
                label=f"target: start {name} < {limit:g} ms at {TARGET_LOAD:.0%}",
            )
        ax.set_yscale("log")
        ax.set_xticks(loads, [f"{p['load']:.0%}\n{p['offered']:,.0f}/s" for p in mine], fontsize=8)
        capacity = report["median"]["capacity"][executor]
        ax.set_title(
            f"{executor} -c {report['concurrency'][executor]}, capacity {capacity:,.0f}/s",
            fontsize=10,
        )
        ax.set_xlabel("offered load (share of capacity, jobs/s)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("milliseconds (median of runs)")
    axes[0][-1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"naq latency under open-loop load\n{note}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- tables ------------------------------------------------------------------------------
def latency_table(report: dict[str, Any]) -> list[str]:
    """The latency medians as a Markdown table (milliseconds)."""
    names = [name for name, _ in PERCENTILES]
    head = ["executor", "load", "offered/s"]
    for part in ("start", "result", "raw"):
        head += [f"{part} {name}" for name in names]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in report["median"]["phases"]:
        row = [p["executor"], f"{p['load']:.0%}", f"{p['offered']:,.0f}"]
        for part in ("start", "result", "raw"):
            row += [f"{p[part][name]:.2f}" for name in names]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def summary(reports: dict[str, Any], note: str) -> str:
    lines = [f"# naq benchmarks, {note}", ""]
    bars, limits = throughput_bars(reports)
    if bars:
        lines += ["## Throughput (medians, jobs/s)", "", "| figure | jobs/s | source |"]
        lines.append("| --- | --- | --- |")
        lines += [f"| {label} | {rate:,.0f} | raw limit |" for label, rate in limits.items()]
        lines += [f"| {bar.label} | {bar.rate:,.0f} | {bar.source} |" for bar in bars]
        lines += ["", "![throughput](throughput.png)", ""]
    if "latency" in reports:
        lines += ["## Latency (medians, milliseconds)", ""]
        lines += latency_table(reports["latency"])
        checks = reports["latency"].get("targets", {})
        if checks:
            lines.append("")
            lines += [
                f"- {key}: {c['value_ms']:.2f} ms (target < {c['target_ms']:g} ms): "
                f"{'PASS' if c['pass'] else 'FAIL'}"
                for key, c in checks.items()
            ]
        lines += ["", "![latency](latency.png)", ""]
    return "\n".join(lines)


def draw(results: Path) -> list[Path]:
    """Every chart and the summary the reports in ``results`` allow; the files written."""
    import matplotlib

    matplotlib.use("Agg")
    reports = load(results)
    if not reports:
        raise SystemExit(f"no throughput.json, executors.json or latency.json in {results}")
    newest = max((results / f"{name}.json").stat().st_mtime for name in reports)
    note = machine_note(reports, datetime.date.fromtimestamp(newest))
    written: list[Path] = []
    bars, limits = throughput_bars(reports)
    if bars:
        plot_throughput(bars, limits, note, results / "throughput.png")
        written.append(results / "throughput.png")
    if "latency" in reports:
        plot_latency(reports["latency"], note, results / "latency.png")
        written.append(results / "latency.png")
    (results / "summary.md").write_text(summary(reports, note) + "\n")
    written.append(results / "summary.md")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("results", type=Path, nargs="?", default=Path("bench/results"))
    args = parser.parse_args(argv)
    missing = [n for n in ("throughput", "executors", "latency") if n not in load(args.results)]
    if missing:
        print(f"note: no {', '.join(m + '.json' for m in missing)} in {args.results}")
    for path in draw(args.results):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
