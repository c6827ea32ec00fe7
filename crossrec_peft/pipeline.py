"""One run, end to end: data -> model -> baselines -> training -> evaluation -> adapter package -> report."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from . import registry
from .config import component, to_yaml
from .data import leave_one_out, load_data
from .data.source import model_fields
from .evaluation import encode_catalog, encode_zero_shot, evaluate_cases, model_scorer, popularity_scorer, zero_shot_scorer
from .methods.base import count_parameters
from .model import build_model
from .package import export_package
from .report import print_summary, write_report
from .train import MetricsLog, train


def quiet_libraries() -> None:
    import warnings

    import datasets
    import transformers

    # Deprecation notices from inside transformers/peft say nothing a user of crossrec-peft can act on.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def catalog_features(model, data, cfg: DictConfig) -> dict:
    """Every modality's inputs for the whole catalog (what training, evaluation and reloads all use)."""
    return model.featurize(data.columns(model_fields(cfg)), data.feature_context(cfg.data.on_bad_image))


def run(cfg: DictConfig, run_dir: str | Path, *, progress: bool = True, summary: bool = True) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from rich.console import Console

    console = Console(quiet=not progress)
    started = time.perf_counter()
    quiet_libraries()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    log = MetricsLog(run_dir / "metrics.jsonl")

    set_seed(cfg.seed)
    accelerator = Accelerator(cpu=cfg.train.cpu, mixed_precision=cfg.train.mixed_precision)
    console.print(f"[bold]{cfg.name}[/]: loading data ({cfg.data.path or f'{cfg.domain} demo catalog'})")
    data = load_data(cfg)
    split = leave_one_out(data.sequences)
    num_items = len(data.item_ids)
    console.print(f"  {len(data.item_ids):,} items, {len(data.user_ids):,} users, {data.num_interactions:,} interactions")

    model = build_model(cfg.model)
    features = catalog_features(model, data, cfg)
    model.to(accelerator.device)
    trainable, total = count_parameters(model)
    console.print(f"  model: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")

    ks = list(cfg.eval.ks)
    bs, max_history = cfg.train.eval_batch_size, cfg.model.max_history

    def evaluate_model(m, cases, desc):
        content = encode_catalog(m, features, num_items, bs, progress=progress, desc=desc)
        return evaluate_cases(model_scorer(m, content, max_history), cases, ks, seed=cfg.seed)

    zero_shot = encode_zero_shot(model, features, num_items, bs, progress=progress)
    untuned = evaluate_cases(zero_shot_scorer(zero_shot, max_history), split.test, ks, seed=cfg.seed)
    popularity = evaluate_cases(popularity_scorer(split.train_item_counts(num_items)), split.test, ks, seed=cfg.seed)
    log.write({"epoch": 0, "split": "test", "system": "untuned", **untuned})

    entry, _, options = component(registry.objectives, cfg.train.objective, "train.objective")
    result = train(
        model, split.train, features, entry.factory(options), cfg,
        accelerator=accelerator,
        validate=lambda m: evaluate_model(m, split.validation, "validation: encode items"),
        log=log,
        progress=progress,
    )
    tuned = evaluate_model(model, split.test, "test: encode items")
    metrics = {"model": tuned, "untuned": untuned, "popularity": popularity}
    log.write({"epoch": result.best_epoch, "split": "test", "system": "model", **tuned})

    adapter_dir = None
    adapter_bytes = 0
    if cfg.export.enabled:
        adapter_dir = export_package(model, cfg, run_dir / "adapter", metrics=metrics, data_summary=data.summary())
        adapter_bytes = sum(p.stat().st_size for p in adapter_dir.rglob("*.safetensors"))
    backbone_bytes = sum(enc.backbone.identity()["bytes"] for enc in model.modalities.values())
    report = {
        "name": cfg.name,
        "domain": cfg.domain,
        "run_dir": str(run_dir),
        "adapter_dir": str(adapter_dir) if adapter_dir else None,
        "split": "leave-one-out",
        "metrics": metrics,
        "validation": {"model": result.best_validation},
        "params": {"trainable": trainable, "total": total, "share": trainable / total},
        "adapter_bytes": adapter_bytes,
        "backbone_bytes": backbone_bytes,
        "train_seconds": result.seconds,
        "total_seconds": time.perf_counter() - started,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "data": data.summary(),
    }
    write_report(run_dir, report)
    if summary:
        print_summary(report)
    return report
