"""A recipe run with clocks around its stages, for benchmarks that compare systems by time to a result.

`timed_run` runs the ordinary pipeline (crossrec_peft.pipeline.run) in this process and measures:

- cache_s: the catalog featurize step (the layer-cache build for cached methods; tokenizing for the others);
- epoch_s: training batches only, per epoch; with a `budget`, an epoch stops after that many seconds and its
  time is extrapolated from the batches it did (`extrapolated` says so);
- validation_s: encoding the catalog and ranking the validation users, after each epoch;
- to_best_s: cache_s + the time from the first training step to the end of the best epoch's validation;
- peak_rss_mb: this process's ru_maxrss (run one system per process to make it the system's own).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Callable


def timed_run(cfg, run_dir: Path, *, budget: float = 0) -> tuple[dict, dict]:
    """(report, timing) of one pipeline run of `cfg` into `run_dir`."""
    import crossrec_peft.pipeline as pipeline
    import crossrec_peft.recipe_class as recipe_class
    import crossrec_peft.train as train_module

    clock: dict = {"epochs": [], "validations": []}
    real_features, real_tqdm = recipe_class.catalog_features, train_module.tqdm

    def timed_features(*a, **k):
        started = time.perf_counter()
        out = real_features(*a, **k)
        clock["features"] = time.perf_counter() - started
        return out

    class Budgeted:
        """Stands in for tqdm around the epoch's batches: times them, and stops after `budget` seconds."""

        def __init__(self, iterable, total=None, **_):
            self.iterable, self.total = iterable, total

        def __iter__(self):
            started = time.perf_counter()
            clock.setdefault("train_start", started)
            done = 0
            for batch in self.iterable:
                yield batch
                done += 1
                if budget and time.perf_counter() - started > budget and done < self.total:
                    break
            ended = time.perf_counter()
            clock["epochs"].append({"seconds": ended - started, "batches": done, "of": self.total, "end": ended})

        def set_postfix(self, **_):
            pass

    def on_validation(epoch, metrics):
        now = time.perf_counter()
        clock["validations"].append({"epoch": epoch, "seconds": now - clock["epochs"][-1]["end"], "end": now, "ndcg@10": metrics["ndcg@10"]})

    recipe_class.catalog_features = timed_features  # where Recipe.setup looks it up
    train_module.tqdm = Budgeted
    try:
        report = pipeline.run(cfg, Path(run_dir), progress=False, summary=False, on_validation=on_validation)
    finally:
        recipe_class.catalog_features, train_module.tqdm = real_features, real_tqdm
    epochs = clock["epochs"]
    per_epoch = [e["seconds"] * e["of"] / max(e["batches"], 1) for e in epochs]
    best = max(clock["validations"], key=lambda v: v["ndcg@10"])
    timing = {
        "cache_s": clock["features"],
        "epoch_s": sum(per_epoch) / len(per_epoch),
        "extrapolated": any(e["batches"] < e["of"] for e in epochs),
        "batches_done": [e["batches"] for e in epochs],
        "batches_per_epoch": epochs[0]["of"],
        "validation_s": sum(v["seconds"] for v in clock["validations"]) / len(clock["validations"]),
        "to_best_s": clock["features"] + best["end"] - clock["train_start"],
        "best_epoch": best["epoch"],
        "epochs_run": len(epochs),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    return report, timing


def run_child(spec_file: str, child: Callable[[dict], dict]) -> None:
    """The child side of a benchmark that runs each system in its own process (`script --child SPEC`): read the
    JSON spec, run `child(spec)` and write what it returns to the spec's `out` file for the parent."""
    spec = json.loads(Path(spec_file).read_text())
    Path(spec["out"]).write_text(json.dumps(child(spec)))
