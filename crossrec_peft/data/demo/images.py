"""Small deterministic product renderings for the demo catalogs (PIL only).

An image shows a shape (from the item's category) filled with the item's colour and overlaid with a
pattern. The pattern is a taste attribute that no text field mentions, so a model that sees images can learn
something a text-only model cannot.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

RGB = {
    "black": (20, 20, 20), "white": (235, 235, 235), "red": (200, 30, 30), "navy blue": (20, 30, 120),
    "forest green": (30, 110, 40), "yellow": (230, 200, 20), "grey": (128, 128, 128), "pink": (240, 130, 170),
    "orange": (240, 130, 20), "teal": (20, 140, 140),
}
PATTERNS = ["plain", "stripes", "dots", "checks", "diagonal"]
SHAPES = ["circle", "square", "triangle", "diamond", "hexagon"]


def _contrast(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return (250, 250, 250) if sum(rgb) < 380 else (15, 15, 15)


def render(path: Path, *, color: str, pattern: str, shape: str, size: int = 32, background: tuple[int, int, int] = (200, 200, 210)) -> None:
    scale = 4  # draw large and downsample: smooth edges at the small size
    big = size * scale
    fill = RGB[color]
    ink = _contrast(fill)
    layer = Image.new("RGB", (big, big), fill)
    draw = ImageDraw.Draw(layer)
    step = big // 6
    if pattern == "stripes":
        for x in range(0, big, step):
            draw.rectangle([x, 0, x + step // 3, big], fill=ink)
    elif pattern == "dots":
        for x in range(step // 2, big, step):
            for y in range(step // 2, big, step):
                draw.ellipse([x - step // 5, y - step // 5, x + step // 5, y + step // 5], fill=ink)
    elif pattern == "checks":
        for i, x in enumerate(range(0, big, step)):
            for j, y in enumerate(range(0, big, step)):
                if (i + j) % 2:
                    draw.rectangle([x, y, x + step, y + step], fill=ink)
    elif pattern == "diagonal":
        for d in range(-big, big, step):
            draw.line([(d, 0), (d + big, big)], fill=ink, width=max(1, step // 3))
    mask = Image.new("L", (big, big), 0)
    m = ImageDraw.Draw(mask)
    lo, hi, mid = big // 10, big - big // 10, big // 2
    if shape == "circle":
        m.ellipse([lo, lo, hi, hi], fill=255)
    elif shape == "square":
        m.rectangle([lo, lo, hi, hi], fill=255)
    elif shape == "triangle":
        m.polygon([(mid, lo), (hi, hi), (lo, hi)], fill=255)
    elif shape == "diamond":
        m.polygon([(mid, lo), (hi, mid), (mid, hi), (lo, mid)], fill=255)
    else:
        r = (hi - lo) // 2
        m.polygon([(mid - r // 2, lo), (mid + r // 2, lo), (hi, mid), (mid + r // 2, hi), (mid - r // 2, hi), (lo, mid)], fill=255)
    canvas = Image.new("RGB", (big, big), background)
    canvas.paste(layer, (0, 0), mask)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.resize((size, size), Image.LANCZOS).save(path, format="PNG")
