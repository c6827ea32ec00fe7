"""Small deterministic video covers for the video demo catalog (PIL only).

A cover is a vertical gradient in the video's palette, a motif chosen by its genre drawn in the palette's
accent colour, and a dark title band at the bottom. The palette is a taste that no text field mentions (like
the products' pattern in images.py), so a model that sees covers can learn what a text-only model cannot.
The top-left corner always shows the palette's top colour, which lets tests read the palette back.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

# name -> (top colour, bottom colour, accent colour)
PALETTES: dict[str, tuple[RGB, RGB, RGB]] = {
    "neon": ((230, 40, 200), (40, 10, 80), (40, 240, 240)),
    "pastel": ((250, 205, 220), (200, 230, 250), (120, 170, 130)),
    "noir": ((25, 25, 25), (95, 95, 95), (235, 235, 235)),
    "sunset": ((250, 170, 40), (190, 30, 40), (255, 245, 160)),
    "ocean": ((20, 90, 170), (5, 25, 60), (130, 230, 210)),
    "forest": ((70, 140, 60), (20, 50, 25), (230, 200, 110)),
}
MOTIFS = ["sun", "mountains", "skyline", "star", "waves", "figure"]


def render_cover(path: Path, *, palette: str, motif: str, size: int = 32) -> None:
    """Draw one cover as a `size` x `size` PNG at `path`."""
    top, bottom, accent = PALETTES[palette]
    scale = 4  # draw large and downsample: smooth edges at the small size
    big = size * scale
    t = np.linspace(0.0, 1.0, big)[:, None, None]
    rows = np.round(np.array(top) + (np.array(bottom) - np.array(top)) * t).astype(np.uint8)
    canvas = Image.fromarray(np.ascontiguousarray(np.broadcast_to(rows, (big, big, 3))), "RGB")
    draw = ImageDraw.Draw(canvas)
    lo, hi, mid = big // 5, big - big // 5, big // 2
    band = big - big // 6  # the title band starts here; motifs stay above it and away from the corners
    if motif == "sun":
        r = big // 5
        draw.ellipse([mid - r, mid - r - big // 10, mid + r, mid + r - big // 10], fill=accent)
    elif motif == "mountains":
        draw.polygon([(lo - big // 10, band), (mid - big // 10, lo + big // 10), (mid + big // 10, band)], fill=accent)
        draw.polygon([(mid - big // 8, band), (hi - big // 10, mid - big // 10), (hi + big // 10, band)], fill=accent)
    elif motif == "skyline":
        w = (hi - lo) // 5
        for k, h in enumerate((0.45, 0.7, 0.35, 0.85, 0.55)):
            x = lo + k * w
            draw.rectangle([x, band - int(h * (band - lo)), x + w - scale, band], fill=accent)
    elif motif == "star":
        r_out, r_in = big // 4, big // 10
        points = []
        for k in range(10):
            r = r_out if k % 2 == 0 else r_in
            a = -math.pi / 2 + k * math.pi / 5
            points.append((mid + r * math.cos(a), mid - big // 12 + r * math.sin(a)))
        draw.polygon(points, fill=accent)
    elif motif == "waves":
        step = big // 8
        for k in range(3):
            y = mid - big // 8 + k * step
            draw.arc([lo - step, y - step, mid, y + step], 0, 180, fill=accent, width=scale * 2)
            draw.arc([mid, y - step, hi + step, y + step], 0, 180, fill=accent, width=scale * 2)
    else:  # figure: a head and shoulders
        r = big // 9
        draw.ellipse([mid - r, lo, mid + r, lo + 2 * r], fill=accent)
        draw.pieslice([mid - 3 * r, lo + 2 * r + scale, mid + 3 * r, band + 3 * r], 180, 360, fill=accent)
    draw.rectangle([0, band, big, big], fill=(15, 15, 15))
    for k, w in enumerate((0.55, 0.35)):  # two "lines of title text"
        y = band + scale * 2 + k * scale * 3
        draw.rectangle([big // 8, y, big // 8 + int(w * big), y + scale], fill=(220, 220, 220))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.resize((size, size), Image.LANCZOS).save(path, format="PNG")
