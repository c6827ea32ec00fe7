"""Small factsheet-style images of investment products (PIL only): a risk band over a price chart.

The band has one cell per risk level (Conservative, Income, Balanced, Aggressive), the asset's own cell
coloured from green to red and the others grey, as on a fund's key-information document. Below it, the
close prices are drawn as a line scaled to the chart's height, so the image shows the price trend and how
rough the path is, which no text field states. Used by the far-trans importer (from close_prices.csv) and
so by the finance demo catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

RISK_COLOURS = [(40, 160, 60), (170, 190, 40), (235, 140, 30), (210, 40, 40)]
_GREY = (190, 190, 190)
_PAPER = (250, 250, 245)
_INK = (20, 40, 110)


def render_factsheet(path: Path, *, risk_level: int | None, prices: Sequence[float] | None, size: int = 32) -> None:
    """Write a `size` x `size` PNG. `risk_level` is 1..4 (None: all cells grey); `prices` oldest first
    (None or fewer than two: an empty chart)."""
    scale = 4  # draw large and downsample: smooth lines at the small size
    big = size * scale
    canvas = Image.new("RGB", (big, big), _PAPER)
    draw = ImageDraw.Draw(canvas)
    band = big // 5
    cell = big // len(RISK_COLOURS)
    for level, colour in enumerate(RISK_COLOURS, start=1):
        fill = colour if level == risk_level else _GREY
        draw.rectangle([(level - 1) * cell + scale, scale, level * cell - scale, band - scale], fill=fill)
    values = np.asarray(prices if prices is not None else [], dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) >= 2:
        top, bottom, margin = band + 2 * scale, big - 2 * scale, 2 * scale
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo if hi > lo else 1.0
        xs = np.linspace(margin, big - margin, len(values))
        ys = bottom - (values - lo) / span * (bottom - top)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=_INK, width=2 * scale)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.resize((size, size), Image.LANCZOS).save(path, format="PNG")
