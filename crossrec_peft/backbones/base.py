"""What every backbone receives besides item values when it prepares the catalog's inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable


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
    # Where cached methods keep layer states (crossrec_peft.cache.CacheSettings); None: `frozen` runs its
    # backbone as before and `side`/`top` compute their states in memory for these items only.
    layer_cache: Any = None
    # Training interactions per catalog row (the training split only), where a run has them; None when a saved
    # model is loaded. Backbones that learn one vector per item (`ids`) tell known items from new ones by it.
    train_counts: Optional[Sequence[int]] = None

    def locate(self, row: int) -> str:
        return self.where(row) if self.where else f"catalog row {row + 1}"


@runtime_checkable
class LayeredBackbone(Protocol):
    """What a backbone offers the layer cache beyond `forward` (crossrec_peft/cache). `frozen` needs none of
    it (it caches the forward output); `side` needs `layer_widths` and `layer_states`; `top` needs all.

    Layer 0 is the input to the first block (a transformer's embeddings, a convnet's stem); layer i >= 1 is
    block i's output. Widths may differ per layer (a convnet's stages).

    Optional, for any backbone: `sequence_lengths(features) -> [N]` (real tokens per item); with it, the cache
    build batches items of similar length together (TextBackbone has it; images have no padding to save)."""

    def layer_widths(self) -> list[int]:
        """The width of each layer's pooled state, layers 0..L."""

    def layer_states(self, **inputs: Any) -> tuple[Any, list[Any]]:
        """(the item embedding `forward` returns [B, D], each layer's pooled state [B, width_i])."""

    def token_count(self, features: dict) -> int:
        """Token positions per item in featurized inputs (the cached token states' length)."""

    def tokens_entering(self, start: int, **inputs: Any) -> tuple[Any, Any]:
        """(token states entering layer `start` [B, T, W], their mask [B, T])."""

    def forward_from(self, start: int, tokens: Any, attention_mask: Any) -> Any:
        """The item embedding from token states entering layer `start`: equals `forward` on the inputs that
        produced them."""


@runtime_checkable
class CatalogTable(Protocol):
    """A backbone whose weights are one row per catalog item (`ids`): sized by the catalog it first featurizes,
    not by a config, so loading a package must size it from the saved table first."""

    def size_from_state(self, state: dict[str, Any]) -> None:
        """Build the table at the size of the saved one (`state`: the backbone's tensors, names relative to it)
        when it has not been sized yet."""

    def weights_loaded(self) -> None:
        """Called once saved weights are copied in: reconcile them with what this run's featurize decided
        (which items have a row of their own)."""
