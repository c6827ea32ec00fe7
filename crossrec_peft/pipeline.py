"""One run, end to end: data -> model -> baselines -> training -> evaluation -> adapter package -> report."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig

from . import registry
from .config import component, to_yaml
from .data import load_data, make_split
from .data.domains import get_domain
from .data.source import model_fields
from .baselines import itemknn_scorer, popularity_scorer, run_baselines, untuned_scorer
from .evaluation import HeldOutEvaluation, encode_catalog, evaluate_cases, model_scorer
from .methods.base import count_parameters
from .model import build_model
from .objectives import objective_context
from .package import export_package, init_from_package
from .report import print_summary, write_report
from .checkpoint import find_resumable
from .train import MetricsLog, make_accelerator, train


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


def run(
    cfg: DictConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    summary: bool = True,
    on_validation: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """`on_validation(epoch, metrics)` is called after each epoch's validation (the sweep's pruning hook;
    an exception it raises stops the run)."""
    from accelerate.utils import set_seed
    from rich.console import Console

    console = Console(quiet=not progress)
    started = time.perf_counter()
    quiet_libraries()
    run_dir = Path(run_dir)
    set_seed(cfg.seed)
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process  # under `accelerate launch` only the main process writes files
    # Checked before anything is written: a refused resume leaves the run directory as it was.
    resume = find_resumable(run_dir, cfg, accelerator.num_processes) if cfg.train.resume else None
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(to_yaml(cfg))
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=main)
    console.print(f"[bold]{cfg.name}[/]: loading data ({cfg.data.path or f'{cfg.domain} demo catalog'})")
    data = load_data(cfg)
    split = make_split(data, cfg.data)
    num_items = len(data.item_ids)
    console.print(f"  {len(data.item_ids):,} items, {len(data.user_ids):,} users, {data.num_interactions:,} interactions")

    model = build_model(cfg.model)
    features = catalog_features(model, data, cfg)
    model.to(accelerator.device)
    entry, _, options = component(registry.objectives, cfg.train.objective, "train.objective")
    objective = entry.factory(options)
    # Before anything is trained: checks that the data has what the objective learns from (ratings, labels,
    # categories) and adds the objective's heads to the model, so they are trained, counted and exported.
    if callable(getattr(objective, "prepare", None)):  # plugins may be plain callables
        objective.prepare(model, objective_context(data, split, cfg.seed))
    trainable, total = count_parameters(model)
    console.print(f"  model: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")

    ks = list(cfg.eval.ks)
    bs, max_history = cfg.train.eval_batch_size, cfg.model.max_history

    def evaluate_model(m, cases, desc):
        content = encode_catalog(m, features, num_items, bs, progress=progress, desc=desc)
        return evaluate_cases(model_scorer(m, content, max_history), cases, ks, seed=cfg.seed, repeats=cfg.eval.repeats)

    domain_metrics = None
    domain = get_domain(cfg.domain)
    if domain.extra_metrics is not None:  # e.g. finance's suitability check (suitability.py)
        domain_metrics, why_not = domain.extra_metrics(data, split, ks, seed=cfg.seed)
        if domain_metrics is None:
            console.print(f"  [yellow]{domain.name} metrics left out[/]: {why_not}")
    # Every system is evaluated on the same test cases, tie-breaking and sampled negatives (evaluation.py).
    held_out = HeldOutEvaluation(
        split.test, split.train_item_counts(num_items), ks, seed=cfg.seed, sampled_negatives=cfg.eval.sampled_negatives,
        cold_start_max=cfg.eval.cold_start_max, history_edges=list(cfg.eval.history_buckets),
        domain_metrics=domain_metrics, repeats=cfg.eval.repeats,
    )
    # The cheap baselines on the validation split too, before training: the yardstick the model's validation
    # scores are read against (a tuned model below its own untuned backbone is reported plainly).
    validation_baselines = {}
    if "popularity" in cfg.eval.baselines:
        validation_baselines["popularity"] = popularity_scorer(split.train_item_counts(num_items))
    if "itemknn" in cfg.eval.baselines:
        validation_baselines["itemknn"] = itemknn_scorer(split.train, num_items)
    if "untuned" in cfg.eval.baselines:  # before training: the untrained model's zero-shot embeddings
        zero_shot = untuned_scorer(model, features, num_items, bs, max_history, progress=progress)
        untuned = held_out.run("untuned", zero_shot)
        log.write({"epoch": 0, "split": "test", "system": "untuned", **untuned})
        validation_baselines["untuned"] = zero_shot
    validation_of_baselines = {}
    for system, scorer in validation_baselines.items():
        validation_of_baselines[system] = evaluate_cases(scorer, split.validation, ks, seed=cfg.seed, repeats=cfg.eval.repeats)
        log.write({"epoch": 0, "split": "validation", "system": system, **validation_of_baselines[system]})
    parent = None
    if cfg.init_from:  # continued tuning: after the untuned baseline, which stays the backbones' own embeddings
        from .hub import resolve

        parent = init_from_package(model, resolve(cfg.init_from), cfg, source=cfg.init_from)
        content = encode_catalog(model, features, num_items, bs, progress=progress, desc="parent: encode items")
        log.write({"epoch": 0, "split": "test", "system": "parent", **held_out.run("parent", model_scorer(model, content, max_history))})

    epochs_validated = [0]

    def validate(m):
        metrics = evaluate_model(m, split.validation, "validation: encode items")
        epochs_validated[0] += 1
        if on_validation is not None:
            on_validation(epochs_validated[0], metrics)
        return metrics

    result = train(
        model, split.train, features, objective, cfg,
        accelerator=accelerator,
        validate=validate,
        log=log,
        progress=progress,
        checkpoint_dir=run_dir / "checkpoints",
        resume=resume,
        backbones={name: enc.backbone.identity() for name, enc in model.modalities.items()},
    )
    content = encode_catalog(model, features, num_items, bs, progress=progress, desc="test: encode items")
    tuned = held_out.run("model", model_scorer(model, content, max_history))
    log.write({"epoch": result.best_epoch, "split": "test", "system": "model", **tuned})
    baseline_details = run_baselines(cfg, split, list(data.item_ids), held_out, log=log, progress=progress, console=console)
    evaluated = held_out.report()
    metrics = evaluated["metrics"]
    # Objectives that predict something besides a ranking (rating: RMSE/MAE) measure it on the test cases.
    held_out_metrics = getattr(objective, "held_out_metrics", None)
    objective_metrics = held_out_metrics(model, content, data, split, max_history) if callable(held_out_metrics) else {}
    if objective_metrics:
        log.write({"epoch": result.best_epoch, "split": "test", "system": "model", "objective": objective_metrics})

    if not main:  # the other processes helped train (and computed the same metrics); the main one writes
        return {}
    adapter_dir = None
    adapter_bytes = 0
    if cfg.export.enabled:
        adapter_dir = export_package(model, cfg, run_dir / "adapter", metrics=metrics, data_summary=data.summary(), parent=parent)
        adapter_bytes = sum(p.stat().st_size for p in adapter_dir.rglob("*.safetensors"))
    backbone_bytes = sum(enc.backbone.identity()["bytes"] for enc in model.modalities.values())
    report = {
        "name": cfg.name,
        "domain": cfg.domain,
        "run_dir": str(run_dir),
        "adapter_dir": str(adapter_dir) if adapter_dir else None,
        "split": split.kind,
        "split_detail": split.describe(),
        "protocol": evaluated["protocol"],
        "metrics": metrics,
        "objective_metrics": objective_metrics,
        "baselines": list(cfg.eval.baselines),
        "baseline_details": baseline_details,
        "sampled": evaluated["sampled"],
        "cold_start": evaluated["cold_start"],
        "by_history": evaluated["by_history"],
        "domain_metrics": evaluated["domain_metrics"],
        "validation": {"model": result.best_validation, **validation_of_baselines},
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
