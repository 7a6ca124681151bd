"""Chart geometry for the HTML report: scales, ticks, the Pareto front, point and line
positions. Only numbers and plain strings come out; the template draws them as inline SVG, so
every label (arm names come from the user) goes through Jinja's autoescaping."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#bab0ac", "#e15759"]
WIDTH, HEIGHT = 340, 250  # drawn at this size (1 unit = 1 CSS pixel), so text stays 11-12 px
WIDE = 720
MARGIN = {"left": 62, "right": 18, "top": 14, "bottom": 46}
LOG_SPAN = 50  # values spanning this ratio or more get a log axis
INSET = 10  # pixels between the plot box and the first/last tick
ZERO_SLOT = 0.08  # on a log axis, zero sits in its own slot at the start, before a gap


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def short_number(value: float) -> str:
    """Tick labels: 0.25, 12, 1.5k, 3M, 1e-05."""
    if value == 0:
        return "0"
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    if magnitude < 1e-3:
        return f"{value:.0e}"
    return f"{value:.3g}"


@dataclass
class Axis:
    label: str
    lo: float
    hi: float
    log: bool = False
    has_zero: bool = False
    ticks: list[tuple[float, str]] = field(default_factory=list)

    def fraction(self, value: float) -> float:
        """Where a value sits along the axis, 0 at the start and 1 at the end."""
        if not self.log:
            return (value - self.lo) / (self.hi - self.lo)
        if value <= 0:
            return 0.0
        start = 2 * ZERO_SLOT if self.has_zero else 0.0
        span = math.log10(self.hi) - math.log10(self.lo)
        return start + (1 - start) * (math.log10(value) - math.log10(self.lo)) / span


def make_axis(label: str, values: list[float], *, include_zero: bool = False, integer: bool = False) -> Axis:
    positives = [v for v in values if v > 0]
    if positives and min(values) >= 0 and max(positives) / min(positives) >= LOG_SPAN:
        lo, hi = 10 ** math.floor(math.log10(min(positives))), 10 ** math.ceil(math.log10(max(positives)))
        axis = Axis(label, lo, hi, log=True, has_zero=any(v == 0 for v in values))
        axis.ticks = [(10.0**e, short_number(10.0**e)) for e in range(round(math.log10(lo)), round(math.log10(hi)) + 1)]
        if axis.has_zero:
            axis.ticks.insert(0, (0.0, "0"))
        return axis
    lo, hi = min(values), max(values)
    if include_zero:
        lo = min(lo, 0.0)
    if hi == lo:  # one value (or all equal): centre it in a small range
        pad = abs(hi) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    step = _nice_step((hi - lo) / 5)
    if integer:  # optimizer steps: no tick at step 1.5
        step = max(1.0, round(step))
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    count = round((hi - lo) / step)
    return Axis(label, lo, hi, ticks=[(lo + i * step, tick_label(lo + i * step, step)) for i in range(count + 1)])


def tick_label(value: float, step: float) -> str:
    """As many decimals as the tick step needs, so neighbouring ticks never read the same."""
    value = round(value, 12)
    if abs(value) >= 1000 or value == 0:
        return short_number(value)
    exponent = math.floor(math.log10(step))
    mantissa = round(step / 10**exponent, 6)  # 1, 2, 2.5 or 5: 2.5 needs one decimal more
    decimals = max(0, -exponent + (0 if mantissa in (1, 2, 5) else 1))
    return f"{value:.{decimals}f}"


def _nice_step(raw: float) -> float:
    exponent = math.floor(math.log10(raw))
    for multiple in (1, 2, 2.5, 5, 10):
        if multiple * 10**exponent >= raw:
            return multiple * 10**exponent
    return 10 ** (exponent + 1)


def pareto_front(points: list[tuple[float, float]], x_higher_better: bool, y_higher_better: bool) -> set[int]:
    """Indices of the points no other point dominates (at least as good on both, better on one)."""

    def better_or_equal(a, b, higher):
        return a >= b if higher else a <= b

    front = set()
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            better_or_equal(xj, xi, x_higher_better)
            and better_or_equal(yj, yi, y_higher_better)
            and (xj, yj) != (xi, yi)
            for j, (xj, yj) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.add(i)
    return front


class Frame:
    """The plotting box of one chart and the mapping from data to pixels."""

    def __init__(self, x: Axis, y: Axis, width: int = WIDTH, height: int = HEIGHT, inset: int = INSET):
        self.x, self.y, self.width, self.height, self.inset = x, y, width, height, inset
        self.left, self.top = MARGIN["left"], MARGIN["top"]
        self.right, self.bottom = width - MARGIN["right"], height - MARGIN["bottom"]

    # Data stay INSET pixels inside the box, so a point on the axis minimum is not cut in half.
    def px(self, value: float) -> float:
        return round(self.left + self.inset + self.x.fraction(value) * (self.right - self.left - 2 * self.inset), 1)

    def py(self, value: float) -> float:
        return round(self.bottom - self.inset - self.y.fraction(value) * (self.bottom - self.top - 2 * self.inset), 1)

    def base(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "left": self.left,
            "right": self.right,
            "top": self.top,
            "bottom": self.bottom,
            "x_label": self.x.label + (" (log scale)" if self.x.log else ""),
            "y_label": self.y.label + (" (log scale)" if self.y.log else ""),
            "x_ticks": [{"pos": self.px(v), "text": t} for v, t in self.x.ticks],
            "y_ticks": [{"pos": self.py(v), "text": t} for v, t in self.y.ticks],
        }


def scatter(series: list[dict], *, x_label: str, y_label: str, x_higher_better: bool, y_higher_better: bool) -> dict:
    """series: [{name, colour, x, y, y_ci: (low, high) or None}] -> chart with the Pareto front
    marked and joined, and a confidence interval drawn as a vertical bar where one is given."""
    xs, ys = [s["x"] for s in series], [s["y"] for s in series]
    intervals = [v for s in series if s.get("y_ci") for v in s["y_ci"]]
    frame = Frame(make_axis(x_label, xs), make_axis(y_label, ys + intervals))
    front = pareto_front(list(zip(xs, ys)), x_higher_better, y_higher_better)
    points = [
        {
            **s,
            "cx": frame.px(s["x"]),
            "cy": frame.py(s["y"]),
            "front": i in front,
            "ci": (frame.py(s["y_ci"][0]), frame.py(s["y_ci"][1])) if s.get("y_ci") else None,
        }
        for i, s in enumerate(series)
    ]
    line = sorted((p for p in points if p["front"]), key=lambda p: p["cx"])
    return {
        **frame.base(),
        "points": points,
        "front_line": " ".join(f"{p['cx']},{p['cy']}" for p in line),
        "front_names": [p["name"] for p in line],
        "better_x": "right" if x_higher_better else "left",
        "better_y": "top" if y_higher_better else "bottom",
    }


def lines(series: list[dict], *, x_label: str, y_label: str) -> dict:
    """series: [{name, colour, points: [[x, y], ...]}] -> one polyline per series."""
    xs = [x for s in series for x, _ in s["points"]]
    ys = [y for s in series for _, y in s["points"]]
    frame = Frame(make_axis(x_label, xs, integer=True), make_axis(y_label, ys), width=WIDE, height=300)
    drawn = []
    for s in series:
        coords = [(frame.px(x), frame.py(y)) for x, y in s["points"]]
        drawn.append(
            {
                **s,
                "polyline": " ".join(f"{x},{y}" for x, y in coords),
                "dots": [{"cx": x, "cy": y, "x": px, "y": py} for (x, y), (px, py) in zip(coords, s["points"])]
                if len(coords) <= 40
                else [],
            }
        )
    return {**frame.base(), "series": drawn}


def grouped_bars(groups: list[str], series: list[dict], *, y_label: str) -> dict:
    """Bars of values in [0, 1]: one group per class, one bar per series ({name, colour, values})."""
    width = min(WIDE, max(420, 120 * len(groups) + 80))
    frame = Frame(Axis("class", 0, 1), make_axis(y_label, [0.0, 1.0]), width=width, inset=0)
    slot = (frame.right - frame.left) / max(len(groups), 1)
    bar = slot * 0.8 / max(len(series), 1)
    bars = []
    for g, group in enumerate(groups):
        for s_index, s in enumerate(series):
            value = s["values"][g]
            if value is None:
                continue
            x = frame.left + g * slot + slot * 0.1 + s_index * bar
            top = min(frame.py(value), frame.bottom - 2)  # a zero still shows as a thin bar, not as nothing
            bars.append(
                {
                    "x": round(x, 1),
                    "y": top,
                    "w": round(bar - 1, 1),
                    "h": round(frame.bottom - top, 1),
                    "colour": s["colour"],
                    "name": s["name"],
                    "group": group,
                    "value": value,
                }
            )
    labels = [{"pos": round(frame.left + (g + 0.5) * slot, 1), "text": group} for g, group in enumerate(groups)]
    return {**frame.base(), "bars": bars, "group_labels": labels, "x_ticks": []}
