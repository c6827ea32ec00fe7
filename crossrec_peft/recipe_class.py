"""One run as a class a user can subclass: data -> model -> baselines -> training -> evaluation -> export -> report.

`Recipe.run()` reads as the run does: `setup()`, `fit()` (the Trainer's loop: `train_epoch`, `validate`,
`save`), `evaluate()`, `export()`, `report()`. A recipe YAML may name a subclass with the top-level key
`recipe_class: my_pkg.MyRecipe` (imported by that dotted name only, never from a file path), as torchtune
users copy and change a recipe (docs/training.md, "The recipe class").
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from . import registry
from .baselines import BaselineContext, run_baselines
from .checkpoint import find_resumable
from .config import component
from .data import load_data, make_split
from .data.domains import get_domain
from .data.source import model_fields
from .errors import ConfigError, did_you_mean
from .evaluation import BatchShared, HeldOutEvaluation, encode_catalog, evaluate_cases, evaluate_many, model_scorer
from .hybrid import FILE as HYBRID_FILE
from .hybrid import HybridChoice, Neighbours, best_decay, best_weight, hybrid_scorer
from .methods.base import count_parameters
from .model import build_model
from .objectives import objective_context
from .package import export_package, init_from_package
from .report import print_summary, write_report
from .rundir import check_run_dir, finished_report, start_run_dir
from .train import MetricsLog, Trainer, make_accelerator


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


def catalog_features(model, data, cfg: DictConfig, *, progress: bool = True, train_counts=None) -> dict:
    """Every modality's inputs for the whole catalog (what training, evaluation and reloads all use). Cached
    methods (frozen, side, top) read the layer cache under data.cache_dir ($CROSSREC_PEFT_CACHE), building
    what it lacks: one backbone pass per item, kept across runs. `train_counts` (training interactions per
    catalog item) tells per-item backbones (`ids`) which items training can give a vector."""
    from .cache import CacheSettings
    from .data.source import cache_root

    context = data.feature_context(cfg.data.on_bad_image, cfg.data.allow_outside_images)
    context.layer_cache = CacheSettings(root=cache_root(cfg.data.cache_dir), batch_size=int(cfg.train.eval_batch_size), progress=progress)
    context.train_counts = train_counts
    return model.featurize(data.columns(model_fields(cfg)), context)


class Recipe(Trainer):
    """A training run. Override a method to change that part; call super() to keep the rest.

    After `setup()` the attributes a subclass reads are: accelerator, data, split, model, features,
    objective, log (metrics.jsonl), held_out (the test protocol), state (TrainState), run_dir.
    """

    def __init__(
        self, cfg: DictConfig, run_dir: str | Path, *, progress: bool = True, summary: bool = True,
        on_validation: Callable[[int, dict[str, Any]], None] | None = None,
    ):
        """`on_validation(epoch, record)` is called after each epoch's validation, once its record (the metrics,
        train_loss) is logged: the sweep's pruning hook; an exception it raises stops the run."""
        super().__init__(cfg, progress=progress)
        from rich.console import Console

        self.run_dir = Path(run_dir)
        self.summary = summary
        self.on_validation = on_validation
        self.console = Console(quiet=not progress)
        self.started = time.perf_counter()
        self.hybrid: HybridChoice | None = None  # what choose_hybrid decided (hybrid.enabled), for export and report

    def run(self) -> dict[str, Any]:
        """The whole run; returns the report (empty on processes other than the main one). Resuming a run
        that has finished returns its report and writes nothing (rundir.finished_report)."""
        self.started = time.perf_counter()
        if self.cfg.train.resume:
            finished = finished_report(self.run_dir, self.cfg)
            if finished is not None:
                return self.already_finished(finished)
        self.setup()
        self.result = self.fit()
        self.evaluate()
        if not self.accelerator.is_main_process:  # the others helped train (and computed the same metrics)
            return {}
        self.export()
        return self.report()

    def already_finished(self, report: dict[str, Any]) -> dict[str, Any]:
        """Say that the run being resumed had finished, and where its report is; nothing is loaded or written."""
        from accelerate import PartialState

        if not PartialState().is_main_process:  # under `accelerate launch`: said once
            return {}
        # print, not self.console: this is the command's answer, which --quiet (no progress output) keeps.
        print(
            f"The run at {self.run_dir} is already finished: its report is {self.run_dir / 'report.json'} (and "
            f"report.md beside it). Nothing was changed; to run this config again, give another directory with --out DIR."
        )
        return report

    # -- setup -------------------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load and check every input, then start the run directory, measure the baselines that need the
        untrained model or are the validation yardstick, load an init_from parent, and build the loop."""
        from accelerate.utils import set_seed

        cfg = self.cfg
        quiet_libraries()
        set_seed(cfg.seed)
        self.accelerator = make_accelerator(cfg)
        # Checked before anything is written: a refused resume, or a finished run in the way, leaves the run
        # directory as it was (rundir.py). Nothing is written there until every input below has been checked.
        check_run_dir(self.run_dir, resume=bool(cfg.train.resume))
        resume = find_resumable(self.run_dir, cfg, self.accelerator.num_processes) if cfg.train.resume else None
        self.setup_data()
        self.setup_model()
        self.check_inputs()
        # Every input is loaded and checked: the run starts, and only now writes into its directory.
        if self.accelerator.is_main_process:  # under `accelerate launch` only the main process writes files
            start_run_dir(self.run_dir, cfg)
        self.log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.accelerator.is_main_process)
        self.setup_baselines()
        self.parent = self.load_parent()
        self.setup_training(
            self.model, self.split.train, self.features, self.objective, accelerator=self.accelerator, log=self.log,
            checkpoint_dir=self.run_dir / "checkpoints", resume=resume,
            backbones={name: enc.backbone.identity() for name, enc in self.model.modalities.items()},
        )

    def setup_data(self) -> None:
        cfg = self.cfg
        self.console.print(f"[bold]{cfg.name}[/]: loading data ({cfg.data.path or f'{cfg.domain} demo catalog'})")
        self.data = load_data(cfg)
        self.split = make_split(self.data, cfg.data)
        self.num_items = len(self.data.item_ids)
        self.console.print(f"  {self.num_items:,} items, {len(self.data.user_ids):,} users, {self.data.num_interactions:,} interactions")

    def setup_model(self) -> None:
        cfg = self.cfg
        self.model = build_model(cfg.model)
        self.model.to(self.accelerator.device)  # before the layer cache is built: on the GPU where there is one
        self.features = catalog_features(
            self.model, self.data, cfg, progress=self.progress, train_counts=self.split.train_item_counts(self.num_items),
        )
        entry, _, options = component(registry.objectives, cfg.train.objective, "train.objective")
        self.objective = registry.objectives.create(entry, options)
        # Before anything is trained: checks that the data has what the objective learns from (ratings, labels,
        # categories) and adds the objective's heads to the model, so they are trained, counted and exported.
        self.objective.prepare(self.model, objective_context(self.data, self.split, cfg.seed))
        self.trainable_count, self.total_count = count_parameters(self.model)
        share = 100 * self.trainable_count / self.total_count
        self.console.print(f"  model: {self.trainable_count:,} trainable of {self.total_count:,} parameters ({share:.2f}%)")

    def check_inputs(self) -> None:
        """The domain's extra metrics and an init_from parent package (files, model section, backbones), before the
        run starts."""
        cfg = self.cfg
        self.domain_metrics = None
        domain = get_domain(cfg.domain)
        if domain.extra_metrics is not None:  # e.g. finance's suitability check (suitability.py)
            self.domain_metrics, why_not = domain.extra_metrics(self.data, self.split, list(cfg.eval.ks), seed=cfg.seed)
            if self.domain_metrics is None:
                self.console.print(f"  [yellow]{domain.name} metrics left out[/]: {why_not}")
        if cfg.init_from:  # files, model section and backbones; the weights load after the run starts
            from .hub import resolve
            from .package import check_parent

            check_parent(self.model, resolve(cfg.init_from), cfg, source=cfg.init_from)

    def setup_baselines(self) -> None:
        """Every system is evaluated on the same test cases, tie-breaking and sampled negatives (evaluation.py).
        The cheap baselines run on the validation split too, before training: the yardstick the model's
        validation scores are read against. Baselines whose scorer needs the model before it trains (untuned:
        its zero-shot embeddings) are measured on the test split now; the rest after training."""
        cfg, ev = self.cfg, self.cfg.eval
        self.held_out = HeldOutEvaluation(
            self.split.test, self.split.train_item_counts(self.num_items), list(ev.ks), seed=cfg.seed,
            sampled_negatives=ev.sampled_negatives, cold_start_max=ev.cold_start_max,
            history_edges=list(ev.history_buckets), domain_metrics=self.domain_metrics, repeats=ev.repeats,
        )
        self.baseline_context = BaselineContext(
            cfg, self.split, list(self.data.item_ids), log=self.log, model=self.model, features=self.features, progress=self.progress,
        )
        self.validation_baselines = {}
        for name in ev.baselines:
            baseline = registry.baselines.create(name)
            if not (baseline.before_training or baseline.validated):
                continue
            scorer = baseline.scorer(self.baseline_context)
            if baseline.before_training:
                self.log.write({"epoch": 0, "split": "test", "system": name, **self.held_out.run(name, scorer)})
            if baseline.validated:
                self.validation_baselines[name] = scorer
        self.validation_of_baselines = {}
        for system, scorer in self.validation_baselines.items():
            metrics = evaluate_cases(scorer, self.split.validation, list(ev.ks), seed=cfg.seed, repeats=ev.repeats)
            self.validation_of_baselines[system] = metrics
            self.log.write({"epoch": 0, "split": "validation", "system": system, **metrics})

    def load_parent(self) -> dict | None:
        """Continued tuning (init_from): after the untuned baseline, which stays the backbones' own embeddings."""
        if not self.cfg.init_from:
            return None
        from .hub import resolve

        parent = init_from_package(self.model, resolve(self.cfg.init_from), self.cfg, source=self.cfg.init_from)
        self.log.write({"epoch": 0, "split": "test", "system": "parent", **self.held_out.run("parent", self.scorer(self.model, "parent: encode items"))})
        return parent

    # -- training, evaluation, export ----------------------------------------------------------------------
    def scorer(self, model, desc: str):
        """Score users against the whole catalog as `model` encodes it (encoded once, in batches)."""
        return model_scorer(model, self.encode(model, desc), self.cfg.model.max_history)

    def encode(self, model, desc: str):
        return encode_catalog(model, self.features, self.num_items, self.cfg.train.eval_batch_size, progress=self.progress, desc=desc)

    def validate(self, model) -> dict[str, float]:
        """Full-ranking metrics on the validation split (NDCG@10 picks the best epoch)."""
        cfg = self.cfg
        return evaluate_cases(
            self.scorer(model, "validation: encode items"), self.split.validation, list(cfg.eval.ks), seed=cfg.seed, repeats=cfg.eval.repeats,
        )

    def end_epoch(self, epoch: int) -> None:
        """The Trainer's end of epoch (validate, log, keep the best), then `on_validation` with the epoch's
        record: after it is in metrics.jsonl, so a run the hook stops (a pruned sweep trial) keeps that line."""
        super().end_epoch(epoch)
        if self.on_validation is not None and self.accelerator.is_main_process:
            self.on_validation(epoch, self.state.history[-1])

    def evaluate(self) -> None:
        """The trained model (and, with hybrid.enabled, its hybrid with item co-occurrence) and the remaining
        baselines on the test split, and the objective's own metrics."""
        cfg, best_epoch = self.cfg, self.result.best_epoch
        content = self.encode(self.model, "test: encode items")
        tuned = self.held_out.run("model", model_scorer(self.model, content, cfg.model.max_history))
        self.log.write({"epoch": best_epoch, "split": "test", "system": "model", **tuned})
        self.hybrid = self.choose_hybrid(content) if cfg.hybrid.enabled else None
        self.baseline_details = run_baselines(
            cfg, self.split, list(self.data.item_ids), self.held_out, log=self.log, progress=self.progress,
            console=self.console, context=self.baseline_context, scorers=self.validation_baselines,
        )
        self.evaluated = self.held_out.report()
        # Objectives that predict something besides a ranking (rating: RMSE/MAE) measure it on the test cases.
        self.objective_metrics = self.objective.held_out_metrics(self.model, content, self.data, self.split, cfg.model.max_history)
        if self.objective_metrics:
            self.log.write({"epoch": best_epoch, "split": "test", "system": "model", "objective": self.objective_metrics})

    def choose_hybrid(self, content) -> HybridChoice:
        """The model plus the co-occurrence term (hybrid.py): every weight of `hybrid.weights`, and 0, on the
        validation split; then, at the best weight, every borrowing weight of `hybrid.borrow_weights` (0 is the
        term without borrowing); then, with both, every recency decay of `hybrid.decays` (1 is the plain
        mean). The best is run on the test split as the system "hybrid" and exported."""
        cfg, best_epoch = self.cfg, self.result.best_epoch
        ids = list(self.data.item_ids)
        neighbours = Neighbours.fit(self.split.train, ids, cfg.hybrid.neighbours)
        term = neighbours.on_catalog(ids)
        base = model_scorer(self.model, content, cfg.model.max_history)
        # Each step ranks all its candidates in one pass over the validation cases, so the model's scores (and
        # in the first step the term's) are computed once per batch of cases, not once per candidate.
        shared = BatchShared(base)

        def validate(scorers: dict) -> dict:
            return evaluate_many(scorers, self.split.validation, list(cfg.eval.ks), seed=cfg.seed, repeats=cfg.eval.repeats)

        term_scores = BatchShared(term.scores)
        validation = validate({w: hybrid_scorer(shared, term_scores, w) for w in sorted({0.0, *map(float, cfg.hybrid.weights)})})
        choice = HybridChoice(neighbours, best_weight(validation), validation)  # every weight's score: in the report
        if choice.weight > 0 and cfg.hybrid.borrow > 0 and any(w > 0 for w in cfg.hybrid.borrow_weights):
            with torch.no_grad():
                vectors = self.model.item_vectors(content.to(next(self.model.parameters()).device)).float().cpu()
            terms = {0.0: term}
            for b in sorted({float(w) for w in cfg.hybrid.borrow_weights if w > 0}):
                terms[b] = neighbours.on_catalog(ids, vectors, borrow=cfg.hybrid.borrow, borrow_weight=b)
            by_borrow = validate({b: hybrid_scorer(shared, t.scores, choice.weight) for b, t in terms.items() if b > 0})
            choice.borrow_validation = {0.0: validation[choice.weight], **by_borrow}
            choice.borrow, choice.borrow_weight = cfg.hybrid.borrow, best_weight(choice.borrow_validation)
            term = terms[choice.borrow_weight]
        if choice.weight > 0 and any(d < 1 for d in cfg.hybrid.decays):
            terms = {1.0: term}
            for d in sorted({float(d) for d in cfg.hybrid.decays if d < 1}):
                terms[d] = term.with_decay(d)  # the chosen term, borrowing included; only the history's weights change
            by_decay = validate({d: hybrid_scorer(shared, t.scores, choice.weight) for d, t in terms.items() if d < 1})
            choice.decay_validation = {1.0: choice.chosen, **by_decay}
            choice.decay = best_decay(choice.decay_validation)
            term = terms[choice.decay]
        self.log.write({"epoch": best_epoch, "split": "validation", "system": "hybrid", "weight": choice.weight,
                        "borrow_weight": choice.borrow_weight, "decay": choice.decay, **choice.chosen})
        tested = self.held_out.run("hybrid", hybrid_scorer(base, term.scores, choice.weight))
        self.log.write({"epoch": best_epoch, "split": "test", "system": "hybrid", "weight": choice.weight,
                        "borrow_weight": choice.borrow_weight, "decay": choice.decay, **tested})
        borrowed = f", items without co-occurrences borrowing x{choice.borrow_weight:g}" if choice.borrow_weight else ""
        borrowed += f", recent items weighted by decay {choice.decay:g}" if choice.decay < 1 else ""
        self.console.print(f"  hybrid: weight {choice.weight:g} chosen on validation ({neighbours.pairs:,} co-occurrence neighbours{borrowed})")
        return choice

    def export(self) -> Path | None:
        """The adapter package (export.enabled), main process only."""
        self.adapter_dir, self.adapter_bytes = None, 0
        if self.cfg.export.enabled:
            self.adapter_dir = export_package(
                self.model, self.cfg, self.run_dir / "adapter", metrics=self.evaluated["metrics"], data_summary=self.data.summary(),
                parent=self.parent, hybrid=self.hybrid,
            )
            self.adapter_bytes = sum(p.stat().st_size for p in self.adapter_dir.rglob("*.safetensors") if p.name != HYBRID_FILE)
        return self.adapter_dir

    def hybrid_record(self) -> dict[str, Any] | None:
        """report.json's `hybrid`: what the run chose, and the bytes its neighbours take in the package."""
        if self.hybrid is None:
            return None
        exported = self.adapter_dir / HYBRID_FILE if self.adapter_dir else None
        return {**self.hybrid.record(), "bytes": exported.stat().st_size if exported and exported.is_file() else 0}

    def report(self) -> dict[str, Any]:
        """report.json and report.md (docs/report-schema.md), and the summary table."""
        cfg, evaluated, result = self.cfg, self.evaluated, self.result
        trainable, total = self.trainable_count, self.total_count
        report = {
            "name": cfg.name,
            "domain": cfg.domain,
            "run_dir": str(self.run_dir),
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
            "split": self.split.kind,
            "split_detail": self.split.describe(),
            "protocol": evaluated["protocol"],
            "metrics": evaluated["metrics"],
            "objective_metrics": self.objective_metrics,
            "baselines": list(cfg.eval.baselines),
            "baseline_details": self.baseline_details,
            "sampled": evaluated["sampled"],
            "cold_start": evaluated["cold_start"],
            "by_history": evaluated["by_history"],
            "domain_metrics": evaluated["domain_metrics"],
            "validation": {"model": result.best_validation, **self.validation_of_baselines,
                           **({"hybrid": self.hybrid.chosen} if self.hybrid else {})},
            "hybrid": self.hybrid_record(),
            "params": {"trainable": trainable, "total": total, "share": trainable / total},
            "adapter_bytes": self.adapter_bytes,
            "backbone_bytes": sum(enc.backbone.identity()["bytes"] for enc in self.model.modalities.values()),
            "train_seconds": result.seconds,
            "total_seconds": time.perf_counter() - self.started,
            "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run,
            "steps": result.steps,
            "stopped_early": result.stopped_early,
            "data": self.data.summary(),
        }
        write_report(self.run_dir, report)
        if self.summary:
            print_summary(report)
        return report


def recipe_class(name: str | None) -> type[Recipe]:
    """The class a config's `recipe_class` names (None: Recipe), imported by its dotted name only."""
    if not name:
        return Recipe
    key = "'recipe_class'"
    module_name, _, attr = str(name).rpartition(".")
    if not module_name or not all(part.isidentifier() for part in str(name).split(".")):
        raise ConfigError(f"{key}: '{name}' is not a dotted name module.Class (for example my_recipes.MyRecipe).")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                f"{key}: no module named '{exc.name}' (from '{name}'). Install the package that holds it, or add its "
                "folder to PYTHONPATH."
            ) from None
        raise ConfigError(f"{key}: importing '{module_name}' failed: {exc}.") from None
    except Exception as exc:  # the user's module itself fails (a syntax error, an exception at import)
        where = f" ({exc.filename}, line {exc.lineno})" if isinstance(exc, SyntaxError) else ""
        raise ConfigError(f"{key}: importing '{module_name}' raised {type(exc).__name__}: {exc}{where}.") from None
    found = getattr(module, attr, None)
    if found is None:
        candidates = sorted(n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Recipe) and v.__module__ == module.__name__)
        listed = f" Recipe classes defined there: {', '.join(candidates)}." if candidates else " It defines no Recipe subclass."
        raise ConfigError(f"{key}: module '{module_name}' has no '{attr}'.{did_you_mean(attr, candidates)}{listed}")
    if not (isinstance(found, type) and issubclass(found, Recipe)):
        what = f"class {found.__module__}.{found.__qualname__}" if isinstance(found, type) else f"a value of type {type(found).__name__}"
        raise ConfigError(f"{key}: '{name}' is {what}, not a subclass of crossrec_peft.recipe_class.Recipe.")
    return found
