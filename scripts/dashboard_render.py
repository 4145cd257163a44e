"""Draw the dashboard's panels, with the series scripts/dashboard_screenshot.py collected,
into one PNG laid out on the dashboard's own grid (24 columns, rows of its gridPos units).

Run by dashboard_screenshot.py in build/dashboard-venv (matplotlib):
    python scripts/dashboard_render.py PANELS.json OUT.png
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter

BACKGROUND = "#111217"
PANEL = "#181b1f"
TEXT = "#ccccdc"
GRID = "#2c3235"
ROW_HEIGHT = 0.4  # inches per gridPos unit
COLUMN_WIDTH = 0.95  # inches per gridPos column


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def seconds(value: float, _: object = None) -> str:
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min"), (1, "s"), (0.001, "ms")):
        if abs(value) >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value * 1e6:.3g} µs" if value else "0"


def formatter(unit: str) -> FuncFormatter:
    if unit == "s":
        return FuncFormatter(seconds)
    suffix = {"reqps": "/s", "ops": "/s"}.get(unit, "")
    return FuncFormatter(lambda value, _: f"{value:.3g}{suffix}")


def draw(axes: Any, panel: dict[str, Any]) -> None:
    axes.set_facecolor(PANEL)
    axes.set_title(panel["title"], color=TEXT, fontsize=9, loc="left")
    stacked = panel["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    lines: list[tuple[list[datetime], list[float], str]] = []
    for target in panel["targets"]:
        for series in target["series"]:
            times = [datetime.fromtimestamp(float(t), UTC) for t, _ in series["values"]]
            values = [float(v) for _, v in series["values"]]
            lines.append((times, values, legend(target["legendFormat"], series["metric"])))
    if not lines:
        axes.text(0.5, 0.5, "No data", color=TEXT, ha="center", transform=axes.transAxes)
    elif stacked and all(times == lines[0][0] for times, _, _ in lines):
        axes.stackplot(lines[0][0], *[v for _, v, _ in lines], labels=[n for _, _, n in lines])
    else:
        for times, values, name in lines:
            axes.plot(times, values, linewidth=1, label=name)
    if lines:
        axes.legend(
            fontsize=6, loc="upper left", ncol=3, frameon=False, labelcolor=TEXT, handlelength=1
        )
    axes.yaxis.set_major_formatter(formatter(panel["fieldConfig"]["defaults"]["unit"]))
    axes.xaxis.set_major_locator(mdates.SecondLocator(bysecond=(0, 30), tz=UTC))
    axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=UTC))
    axes.tick_params(colors=TEXT, labelsize=7)
    axes.grid(color=GRID, linewidth=0.5)
    axes.set_ylim(bottom=0)
    for spine in axes.spines.values():
        spine.set_color(GRID)


def main() -> None:
    source, out = sys.argv[1], sys.argv[2]
    with open(source) as f:
        dashboard = json.load(f)
    panels = dashboard["panels"]
    header = 1.5  # grid units above the first row, for the caption
    height = header + max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width = 24 * COLUMN_WIDTH + 0.4
    figure = plt.figure(figsize=(width, height * ROW_HEIGHT), dpi=90)
    figure.patch.set_facecolor(BACKGROUND)
    start, end = (datetime.fromtimestamp(t, UTC) for t in dashboard["window"])
    figure.text(
        0.01,
        1 - 0.5 / height,
        f"{dashboard['title']}  ·  job = authsvc  ·  "
        f"{start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC  ·  deploy/grafana/authsvc.json's queries, "
        "drawn from Prometheus by scripts/dashboard_screenshot.py",
        color=TEXT,
        fontsize=12,
        va="center",
    )

    def rect(pos: dict[str, int], top: float, bottom: float) -> list[float]:
        """A gridPos as figure fractions, less room for a title above and ticks below."""
        left = (0.2 + pos["x"] * COLUMN_WIDTH + 0.55) / width
        right = (0.2 + (pos["x"] + pos["w"]) * COLUMN_WIDTH - 0.15) / width
        y_top = 1 - (header + pos["y"] + top) / height
        y_bottom = 1 - (header + pos["y"] + pos["h"] - bottom) / height
        return [left, y_bottom, right - left, y_top - y_bottom]

    for panel in panels:
        if panel["type"] == "row":
            box = rect(panel["gridPos"], 0, 0)
            figure.text(box[0], box[1], panel["title"], color=TEXT, fontsize=12, weight="bold")
            continue
        draw(figure.add_axes(rect(panel["gridPos"], 0.9, 0.9)), panel)
    figure.savefig(out, facecolor=BACKGROUND)


if __name__ == "__main__":
    main()
