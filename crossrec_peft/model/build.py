"""Build a TwoTowerModel from the `model` section of a config, through the registries."""

from __future__ import annotations

from typing import Any, Mapping

from .. import registry
from ..config import component
from .two_tower import ModalityEncoder, TwoTowerModel


def build_model(model_cfg: Mapping[str, Any], *, attach_methods: bool = True, backbones: Mapping[str, Any] | None = None) -> TwoTowerModel:
    """Backbones are loaded frozen; with `attach_methods` each modality's method is attached for training.

    The package loader passes attach_methods=False and lets each method rebuild itself from exported files.
    `backbones` (modality -> an already loaded backbone) lets several models share one frozen backbone
    (the Recommender's domains); those modalities load nothing.
    """
    encoders = {}
    for name, mod in model_cfg["modalities"].items():
        where = f"model.modalities.{name}"
        b_entry, b_arg, b_opts = component(registry.backbones, mod["backbone"], f"{where}.backbone")
        m_entry, _, m_opts = component(registry.methods, mod["method"], f"{where}.method")
        backbone = backbones[name] if backbones and name in backbones else registry.backbones.create(b_entry, b_opts, b_arg)
        method = registry.methods.create(m_entry, m_opts)
        if attach_methods:
            method.attach(backbone)
        encoders[name] = ModalityEncoder(name, mod["fields"], backbone, method)
    f_entry, _, f_opts = component(registry.fusions, model_cfg["fusion"], "model.fusion")
    fusion = registry.fusions.create(f_entry, f_opts, {n: e.out_dim for n, e in encoders.items()})
    u_entry, _, u_opts = component(registry.user_encoders, model_cfg["user_encoder"], "model.user_encoder")
    user_encoder = registry.user_encoders.create(u_entry, u_opts, int(fusion.out_dim))
    return TwoTowerModel(
        encoders,
        fusion,
        user_encoder,
        head_rank=int(model_cfg["head_rank"]),
        temperature=float(model_cfg["temperature"]),
        learn_temperature=bool(model_cfg["learn_temperature"]),
    )
