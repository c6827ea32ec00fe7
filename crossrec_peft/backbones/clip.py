"""CLIP towers through open_clip: the image tower (and optionally CLIP's text tower) as modality backbones.

Names: ``openclip:<arch>/<pretrained-tag>`` (weights fetched by open_clip when online, e.g.
``openclip:ViT-B-32/laion2b_s34b_b79k``), ``openclip:<arch>`` with ``pretrained: <local .safetensors file>``
(or none: random initialisation, trained from scratch), and ``openclip:hf-hub:<repo>``.

Architectures are data: open_clip's own configs plus the JSON files in ``openclip_configs/`` beside this
module (``crossrec-tiny-vit``, for tests and the offline demo), registered with ``open_clip.add_model_config``.

open_clip is pinned (pyproject) to the 3.3 line, whose ResidualAttentionBlock uses nn.MultiheadAttention:
LoRA targets the whole ``attn`` module (peft adapts in_proj and out_proj) and the MLP's ``c_fc``/``c_proj``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..errors import ConfigError, DataError
from ..registry import backbones
from .base import FeatureContext
from .quantize import check_mode, quantize_linears
from .spec import ArchSpec

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "openclip_configs"
RANDOM_INIT_SEED = 0
MAX_IMAGE_PIXELS = 50_000_000  # larger images are refused (decompression bombs, scans pasted by mistake)



def _clip_spec(prefix: str) -> ArchSpec:
    # LoRA on the 3.3 layout: `attn` is nn.MultiheadAttention, which reads out_proj.weight directly, so a LoRA on
    # out_proj alone would never be called; targeting `attn` lets peft adapt the fused in_proj and out_proj.
    # Bottleneck points: ResidualAttentionBlock scales the attention output with ls_1 and the MLP output with
    # ls_2 (LayerScale or nn.Identity) just before each residual sum: the Houlsby positions.
    return ArchSpec(
        lora_targets=("attn", "c_fc", "c_proj"),
        ia3_targets=("c_fc", "c_proj"),
        ia3_feedforward=("c_proj",),
        adapter_points={"attention": f"{prefix}transformer.resblocks.*.ls_1", "mlp": f"{prefix}transformer.resblocks.*.ls_2"},
    )


# Paths are relative to the tower module: the image tower is CLIP's `visual`, the text tower wraps the CLIP model.
CLIP_SPECS = {"image": _clip_spec(""), "text": _clip_spec("clip.")}

_configs_added = False


def _ensure_configs() -> None:
    global _configs_added
    if not _configs_added:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _configs_added = True


def list_architectures() -> list[str]:
    _ensure_configs()
    import open_clip

    return list(open_clip.list_models())


@dataclass
class ClipOptions:
    tower: str = "image"  # image | text
    # A local .safetensors file for openclip:<arch>; null: random initialisation (no pretrained weights).
    pretrained: Optional[str] = None
    # none | int8 | nf4: the tower's Linear layers become bitsandbytes layers (attention's fused in_proj and
    # its out_proj, which nn.MultiheadAttention reads as raw weights, stay in full precision).
    quantize: str = "none"

    def check(self) -> str | None:
        if check_mode(self.quantize):
            return check_mode(self.quantize)
        if self.tower not in ("image", "text"):
            return f"tower must be 'image' or 'text', got '{self.tower}'."
        if self.pretrained and Path(self.pretrained).suffix not in ("", ".safetensors") and Path(self.pretrained).exists():
            return f"pretrained file '{self.pretrained}' is not safetensors; crossrec-peft never unpickles weights."
        return None


def _hub_source(arch: str, pretrained: str | None) -> tuple[str, list[str]] | None:
    """(Hub repo, the files open_clip would read from it, the one it asks for first leading) for
    `openclip:hf-hub:<repo>` and for a pretrained tag that open_clip downloads from the Hub; None for local
    files, random initialisation and tags open_clip does not know (it reports those itself)."""
    from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if arch.startswith("hf-hub:"):
        return arch[len("hf-hub:"):], [HF_CONFIG_NAME]
    if not pretrained or Path(pretrained).exists():
        return None
    import open_clip

    hub = open_clip.get_pretrained_cfg(arch, pretrained).get("hf_hub", "")
    if not hub:
        return None
    # open_clip's convention: "org/name/" means its default weights file, "org/name/<file>" that file; it reads
    # the safetensors sibling of a .bin when the repo has one.
    repo, filename = hub.rstrip("/"), HF_WEIGHTS_NAME
    if not hub.endswith("/"):
        repo, _, filename = hub.rpartition("/")
    safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else str(Path(filename).with_suffix(".safetensors"))
    return repo, [safe, filename]


class _TextTower(nn.Module):
    """CLIP's text tower without the image tower."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        clip.visual = None  # drop the unused tower's weights
        for unused in ("logit_scale", "logit_bias"):  # CLIP's contrastive scale: not part of a text encoder
            if isinstance(getattr(clip, unused, None), nn.Parameter):
                delattr(clip, unused)
        self.clip = clip

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(text)


class ClipBackbone(nn.Module):

    def __init__(self, argument: str, options: ClipOptions):
        super().__init__()
        _ensure_configs()
        import open_clip

        arch, _, tag = argument.partition("/") if not argument.startswith("hf-hub:") else (argument, "", "")
        pretrained = tag or options.pretrained or None
        if pretrained and Path(pretrained).exists() and Path(pretrained).suffix != ".safetensors":
            raise ConfigError(f"openclip:{argument}: weights '{pretrained}' are not safetensors; crossrec-peft never unpickles weights.")
        if not arch.startswith("hf-hub:") and arch not in open_clip.list_models():
            from ..errors import did_you_mean

            raise ConfigError(
                f"Unknown open_clip architecture '{arch}'.{did_you_mean(arch, open_clip.list_models())} "
                "List them with crossrec_peft.backbones.clip.list_architectures()."
            )
        hub_source = _hub_source(arch, pretrained)
        if hub_source:
            from ..hub import offline_snapshot

            # Fail at once when the Hub cannot be reached and the weights are not cached, instead of after
            # open_clip's downloads have retried (a safetensors file, then a .bin). Cached, open_clip finds them
            # itself: its hf_hub_download calls fall back to the cache.
            offline_snapshot(hub_source[0], what=f"Cannot load open_clip backbone 'openclip:{argument}'", files=hub_source[1])
        try:
            with torch.random.fork_rng():
                # Without pretrained weights the tower's starting point is its initialisation; a fixed seed makes
                # it reproducible, so an adapter trained on it reloads onto the same base (checked by hash).
                torch.manual_seed(RANDOM_INIT_SEED)
                with _without_random_init_warning():
                    clip, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, weights_only=True)
        except Exception as exc:  # unknown tag, no network, bad file
            raise ConfigError(f"Cannot load open_clip backbone 'openclip:{argument}' (pretrained={pretrained!r}): {str(exc).splitlines()[0]}") from None
        self._weights_sha256 = None if pretrained else _state_sha256(clip)
        clip.requires_grad_(False)
        clip.eval()
        self.tower = options.tower
        self.modality = options.tower
        self.model_id = f"openclip:{argument}"
        self.model_type = "open_clip"
        self.pretrained = pretrained
        # A tower without pretrained weights has no zero-shot embeddings worth a baseline.
        self.pretrained_weights = bool(pretrained)
        self.options = options
        self.hidden_size = int(clip.visual.output_dim)  # both towers project to CLIP's embed_dim
        self.arch = CLIP_SPECS[options.tower]
        # Bottleneck adapters sit inside the transformer, whose width differs from the projected embed_dim.
        self.adapter_width = int((clip.visual if options.tower == "image" else clip).transformer.width)
        if options.tower == "image":
            self.model = clip.visual
            self.preprocess = preprocess
            self.tokenizer = None
        else:
            self.model = _TextTower(clip)
            self.tokenizer = open_clip.get_tokenizer(arch)
            self.preprocess = None
        self.quantized = options.quantize != "none"
        self.quantized_layers = quantize_linears(self.model, options.quantize, skip=(nn.MultiheadAttention,))

    @property
    def base_model(self) -> nn.Module:
        get_base = getattr(self.model, "get_base_model", None)
        return get_base() if callable(get_base) else self.model

    # -- inputs ---------------------------------------------------------------------------------------------
    def featurize(self, columns: Sequence[Sequence[Any]], context: FeatureContext) -> dict[str, Any]:
        if self.tower == "text":
            texts = [". ".join(str(v).strip() for v in values if v is not None and str(v).strip()) for values in zip(*columns)]
            return {"text": self.tokenizer(texts), "present": torch.tensor([bool(t) for t in texts])}
        return {"paths": check_images(columns[0], context), "preprocess": self.preprocess}

    def collate(self, features: dict[str, Any], index: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.tower == "text":
            return {"text": features["text"][index], "present": features["present"][index]}
        return pixel_batch([features["paths"][i] for i in index.tolist()], features["preprocess"], self.model.image_size)

    def forward(self, pixel_values: torch.Tensor | None = None, text: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(pixel_values if self.tower == "image" else text)

    def identity(self) -> dict:
        digest = self._weights_sha256  # random initialisation: the hash of the initial weights
        size = 0
        if self.pretrained and Path(self.pretrained).is_file():
            digest = hashlib.sha256(Path(self.pretrained).read_bytes()).hexdigest()
            size = Path(self.pretrained).stat().st_size
        return {
            "id": self.model_id,
            "revision": None,
            "model_type": f"open_clip-{self.tower}",
            "hidden_size": self.hidden_size,
            "pretrained": self.pretrained,
            "sha256": digest,
            "bytes": size,
        }


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded for model")


@contextlib.contextmanager
def _without_random_init_warning():
    """open_clip warns on the root logger that a tower without pretrained weights is "initialized randomly".
    Here that is the configured starting point (a tower trained from scratch, or one whose weights come from
    an adapter package right after), recorded as `pretrained: false`; the warning only misleads."""
    root = logging.getLogger()
    dropped = _DropRandomInitWarning()
    root.addFilter(dropped)
    try:
        yield
    finally:
        root.removeFilter(dropped)


def _state_sha256(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_rgb(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")  # palette, greyscale, RGBA and CMYK images all become RGB


def pixel_batch(paths: Sequence[Path | None], preprocess, size) -> dict[str, torch.Tensor]:
    """The model inputs of one batch of images (any image tower): preprocessed pixels, zeros and
    present=False where an item has no usable image."""
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    present = torch.tensor([p is not None for p in paths], dtype=torch.bool)
    pixels = torch.zeros(len(paths), 3, *size)
    for row, path in enumerate(paths):
        if path is not None:
            pixels[row] = preprocess(load_rgb(path))
    return {"pixel_values": pixels, "present": present}


def _image_problem(path: Path) -> str | None:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return "file not found"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    return f"too large ({im.width}x{im.height} pixels; the limit is {MAX_IMAGE_PIXELS:,})"
                im.load()  # decodes: catches truncated files
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return f"not a readable image ({exc})"
    except (OSError, SyntaxError, ValueError) as exc:
        return f"unreadable or truncated ({exc})"
    return None


def _inside(path: Path, root: Path | None) -> bool:
    """Whether `path` (links and `..` resolved) lies inside `root`; True when there is no root to compare."""
    if root is None:
        return True
    try:
        path.resolve().relative_to(Path(root).resolve())
    except ValueError:
        return False
    return True


def check_images(values: Sequence[Any], context: FeatureContext) -> list[Path | None]:
    """Resolve each item's image path and check that it decodes. Bad or missing images stop the run naming
    the item and path, or (on_bad_image=placeholder) become missing images counted in one warning."""
    paths: list[Path | None] = []
    problems: list[tuple[int, str, str]] = []
    for row, value in enumerate(values):
        if value is None or not str(value).strip():
            problems.append((row, "", "no image given"))
            paths.append(None)
            continue
        path = Path(str(value))
        if not path.is_absolute() and context.root is not None:
            path = context.root / path
        problem = _image_problem(path) if context.allow_outside or _inside(path, context.root) else (
            f"outside the data directory {context.root} (allow with data.allow_outside_images=true, or "
            "--allow-outside-images for data validate)"
        )
        if problem:
            problems.append((row, str(path), problem))
            paths.append(None)
        else:
            paths.append(path)
    if problems:
        row, path, problem = problems[0]
        if context.on_bad_image == "error":
            more = f" ({len(problems) - 1} more items have a bad or missing image)" if len(problems) > 1 else ""
            shown = f"image '{path}'" if path else "image"
            raise DataError(
                f"{context.locate(row)}: item '{context.item_ids[row]}' {shown}: {problem}.{more} {context.bad_image_hint}"
            )
        counts: dict[str, int] = {}
        for _, _, p in problems:
            key = p.split(" (")[0]
            counts[key] = counts.get(key, 0) + 1
        log.warning(
            "%d of %d items have no usable image and are encoded without it: %s",
            len(problems), len(values), ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())),
        )
    return paths


@backbones.register("openclip", options=ClipOptions, takes_argument=True,
                    availability=lambda: "offline with random init or a local .safetensors file; pretrained tags need network")
def openclip(options: ClipOptions, argument: str | None = None) -> ClipBackbone:
    """openclip:<arch>[/<tag>] or openclip:hf-hub:<repo>: a CLIP image or text tower (open_clip 3.3)."""
    assert argument
    return ClipBackbone(argument, options)
