"""8-bit and 4-bit frozen backbones through bitsandbytes (imported lazily: it is optional at run time).

Hugging Face encoders are quantized at load time through transformers' BitsAndBytesConfig; open_clip towers
by replacing their nn.Linear layers with bitsandbytes layers. A quantization that cannot run here fails with
a message naming the platform and the alternative, never with a silent fp32 fallback.
"""

from __future__ import annotations

import logging
import platform

import torch
from torch import nn

from ..errors import ConfigError

MODES = ("none", "int8", "nf4")


def check_mode(mode: str) -> str | None:
    return None if mode in MODES else f"quantize must be one of {', '.join(MODES)}, got '{mode}'."


def require_bitsandbytes(mode: str):
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # missing, or a build without support for this platform
        raise ConfigError(
            f"quantize={mode} needs bitsandbytes, which cannot be used on this platform "
            f"({platform.system()} {platform.machine()}, torch {torch.__version__}): {exc}. "
            "Install it with `pip install 'crossrec-peft[quantize]'` where a build exists for this platform, or set quantize=none."
        ) from None
    # bitsandbytes logs a dtype-cast notice for every 8-bit forward on CPU; nothing for the user to act on.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    return bnb


def hf_quantization_config(mode: str):
    if mode == "none":
        return None
    require_bitsandbytes(mode)
    from transformers import BitsAndBytesConfig

    if mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)


def keep_trainable_layout(module: nn.Module) -> None:
    """On CPUs with AVX512-BF16, bitsandbytes repacks a 4-bit weight in place the first time it runs in eval
    mode without gradients; a later training forward through the repacked weight fails ("a view of a leaf
    Variable that requires grad is being used in an in-place operation"). The untuned evaluation runs before
    training, so the repacking is switched off: the weights stay in the layout both paths support."""
    for sub in module.modules():
        if hasattr(sub, "support_avx512bf16_for_cpu"):
            sub.support_avx512bf16_for_cpu = False


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def quantize_linears(module: nn.Module, mode: str, *, skip: tuple[type, ...] = ()) -> int:
    """Replace every nn.Linear under `module` (except those inside `skip` module types) by a bitsandbytes
    layer holding the same weights; returns how many were replaced."""
    if mode == "none":
        return 0
    bnb = require_bitsandbytes(mode)
    device = default_device()
    skipped = {id(sub) for parent in module.modules() if isinstance(parent, skip) for sub in parent.modules()}
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear or id(child) in skipped:
                continue
            if mode == "int8":
                new = bnb.nn.Linear8bitLt(child.in_features, child.out_features, bias=child.bias is not None, has_fp16_weights=False, threshold=6.0)
            else:
                new = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None, quant_type="nf4", compute_dtype=torch.float32)
            new.load_state_dict(child.state_dict())
            new = new.to(device)  # quantizes the weights
            new.requires_grad_(False)
            setattr(parent, name, new)
            replaced += 1
    keep_trainable_layout(module)
    return replaced
