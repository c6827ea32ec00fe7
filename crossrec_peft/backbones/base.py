"""What every backbone receives besides item values when it prepares the catalog's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence


@dataclass
class FeatureContext:
    """Catalog facts a backbone needs to prepare inputs and to name a bad item precisely."""

    item_ids: Sequence[str]
    # Relative image paths resolve against this directory (the data directory).
    root: Optional[Path] = None
    # Location of catalog row i in the user's file ("items.jsonl, line 3"); defaults to the row number.
    where: Optional[Callable[[int], str]] = None
    # "error": stop at bad or missing images; "placeholder": count them and treat the image as missing.
    on_bad_image: str = "error"
    # Image paths that resolve outside `root` (`../../etc/passwd`, an absolute path elsewhere) are refused
    # unless allowed (data.allow_outside_images / --allow-outside-images): a catalog reads its own files.
    allow_outside: bool = False
    # What to do about a bad image, said after the error (a run can switch to placeholders; `index` cannot).
    bad_image_hint: str = "Fix the images, or set data.on_bad_image=placeholder to encode such items without their image."

    def locate(self, row: int) -> str:
        return self.where(row) if self.where else f"catalog row {row + 1}"
