"""`crossrec-peft sweep`: search a recipe's declared space with Optuna, judged on the validation split only.

Each trial is one ordinary run of the recipe with the trial's `key=value` overrides (so its best setting is
a command line anyone can rerun), pruned by Optuna's median rule on the per-epoch validation metric. The
study lives in SQLite in the sweep directory: a killed sweep continues where it stopped (a trial that was
running when it was killed is marked failed and does not count).

Trials run without export and without the baselines (a sweep compares settings of one model with each
other; the chosen setting's own run compares it with the baselines).
"""

from __future__ import annotations

import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError
from .fsutil import check_can_create

TYPES = ("float", "int", "categorical")
# What every trial runs without: nothing to export, no baselines (the trials are compared with each other), and
# no hybrid (trials are judged on the model's validation metric; the run with the chosen overrides picks the
# hybrid's weight on validation itself).
TRIAL_OVERRIDES = ("export.enabled=false", "eval.baselines=[]", "hybrid.enabled=false")


@dataclass(frozen=True)
class Dimension:
    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.key, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.type == "categorical":
            return value in self.choices
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def examples(self) -> list[Any]:
        """Values that bound the range (checked against the config schema before any trial runs)."""
        if self.type == "categorical":
            return list(self.choices)
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


def override(key: str, value: Any) -> str:
    """`key=value` as the override parser reads it back (strings bare, everything else as JSON/YAML)."""
    if isinstance(value, str):
        return f"{key}={value}"
    if isinstance(value, float):
        return f"{key}={value:.6g}"
    return f"{key}={json.dumps(value)}"


def parse_space(space: Mapping[str, Any]) -> list[Dimension]:
    """The declared search space as dimensions; a malformed entry is a ConfigError naming `sweep.space.<key>`."""
    dims = []
    for key, spec in space.items():
        where = f"'sweep.space.{key}'"
        if not isinstance(spec, Mapping):
            raise ConfigError(f"{where} must be a mapping such as {{type: float, low: 0.0001, high: 0.01, log: true}}, got {spec!r}.")
        kind = spec.get("type")
        if kind not in TYPES:
            from .errors import did_you_mean

            raise ConfigError(f"{where}: 'type' must be one of {', '.join(TYPES)}, got {kind!r}.{did_you_mean(str(kind), list(TYPES))}")
        allowed = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
        extra = sorted(set(spec) - allowed)
        if extra:
            raise ConfigError(f"{where}: unknown field '{extra[0]}' for type {kind}; fields: {', '.join(sorted(allowed))}.")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) < 2:
                raise ConfigError(f"{where}: 'choices' must list at least two values.")
            # Optuna stores a choice as JSON and compares it by value: only scalars survive the round trip.
            bad = [c for c in choices if c is not None and not isinstance(c, (bool, int, float, str))]
            if bad:
                raise ConfigError(
                    f"{where}: choices must be numbers, strings, booleans or null, got {bad[0]!r}. To search over "
                    "a structured setting, list one of its scalar keys instead (for example model.user_encoder.name)."
                )
            dims.append(Dimension(key, kind, choices=tuple(choices)))
            continue
        low, high = spec.get("low"), spec.get("high")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)) or not low < high:
            raise ConfigError(f"{where}: needs numbers 'low' < 'high', got low={low!r}, high={high!r}.")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise ConfigError(f"{where}: a log range needs 'low' > 0, got {low!r}.")
        step = spec.get("step")
        if step is not None and (log or not isinstance(step, (int, float)) or step <= 0):
            raise ConfigError(f"{where}: 'step' must be a positive number, and cannot go with log: true.")
        if kind == "int":
            integral = lambda v: isinstance(v, int) or (isinstance(v, float) and v.is_integer())  # noqa: E731
            if not integral(low) or not integral(high):
                raise ConfigError(f"{where}: an int range needs whole numbers 'low' and 'high', got low={low!r}, high={high!r}.")
            if step is not None and (not integral(step) or step < 1):
                raise ConfigError(f"{where}: an int range needs a whole-number 'step' of at least 1, got step={step!r}.")
        dims.append(Dimension(key, kind, float(low), float(high), log, None if step is None else float(step)))
    return dims


def check_space(source, overrides: Sequence[str], dims: Sequence[Dimension], name: str | None) -> None:
    """Load the config at each bound and choice of every dimension, so a misspelt key or an invalid value
    fails before the first trial (with the config's own message, naming the key)."""
    from .config import load_config

    for dim in dims:
        for value in dim.examples():
            try:
                load_config(source, [*overrides, *TRIAL_OVERRIDES, override(dim.key, value)], name=name)
            except ConfigError as exc:
                raise ConfigError(f"'sweep.space.{dim.key}' = {value!r}: {exc}") from None


def pruner(sweep: Any):
    """Median pruning as `sweep:` declares it. Trials report their validation metric at step = epoch (1, 2, ...)
    and Optuna prunes from step == n_warmup_steps on, so `prune_from_epoch` is the warm-up itself."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=int(sweep.prune_after_trials), n_warmup_steps=int(sweep.prune_from_epoch))


SQLITE_HEADER = b"SQLite format 3\x00"


def check_out(out: Path) -> None:
    """Refuse a sweep directory the sweep would damage, before anything is written: a file, a non-empty
    directory without a study (the user's own files, or trial directories whose study.db is gone: a new
    study would reuse their names), a study.db that is not SQLite."""
    if out.is_file():
        raise ConfigError(f"Sweep directory '{out}' is a file, not a directory: choose another --out DIR.")
    check_can_create(out)  # under a file, or a name the file system refuses
    if not out.exists():
        return
    db = out / "study.db"
    if db.exists() or db.is_symlink():
        try:
            with db.open("rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise ConfigError(f"Cannot read the sweep study '{db}': {exc.strerror or exc}. Choose another --out DIR.") from None
        if not db.is_file() or (header and header != SQLITE_HEADER):
            raise ConfigError(f"'{db}' is not a sweep study (not an SQLite database): choose another --out DIR, or move that file away.")
        return
    entries = sorted(p.name for p in out.iterdir())
    trials = [n for n in entries if n.startswith("trial-")]
    if trials:
        raise ConfigError(
            f"Sweep directory '{out}' holds trial directories ({', '.join(trials[:3])}{' ...' if len(trials) > 3 else ''}) "
            "but no study.db, so the sweep cannot continue them: choose another --out DIR, or empty that directory."
        )
    if entries:
        raise ConfigError(
            f"Sweep directory '{out}' is not empty and holds no sweep study (study.db); the sweep would write over "
            f"its files ({', '.join(entries[:3])}{' ...' if len(entries) > 3 else ''}): choose another --out DIR, or empty it."
        )


def _storage(directory: Path) -> str:
    return f"sqlite:///{directory.resolve() / 'study.db'}"


def run_sweep(
    source,
    overrides: Sequence[str],
    out: Path,
    *,
    trials: int,
    timeout_minutes: float | None = None,
    name: str | None = None,
    progress: bool = True,
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Run (or continue) the study in `out` until it holds `trials` finished trials (complete or pruned) or
    the timeout passes; returns the summary also written to `out/sweep.json`.

    A new study's first trial is the recipe's own setting (where it lies in the space), so the sweep starts
    from what is known to work and every later trial is judged against it; `enqueue` adds settings
    ({key: value}) to try next, before the sampler's own."""
    import optuna

    from .config import load_config
    from .pipeline import quiet_libraries, run

    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}.")
    if timeout_minutes is not None and timeout_minutes <= 0:
        raise ConfigError(f"--timeout must be positive minutes, got {timeout_minutes}.")
    base = load_config(source, [*overrides, *TRIAL_OVERRIDES], name=name)
    metric = str(base.sweep.metric)
    if metric not in {f"{m}@{k}" for m in ("recall", "ndcg", "mrr", "map") for k in base.eval.ks}:
        raise ConfigError(f"'sweep.metric' must be a validation metric such as ndcg@10, got '{metric}'.")
    dims = parse_space(OmegaConf.to_container(base.sweep.space, resolve=True))
    if not dims:
        raise ConfigError(
            f"{source}: the recipe declares no search space. Add a 'sweep.space' section, for example "
            "sweep: {space: {train.lr: {type: float, low: 0.0001, high: 0.01, log: true}}} (docs/training.md)."
        )
    check_space(source, overrides, dims, name)
    quiet_libraries()
    check_out(out)
    # The data is loaded and checked once before the study exists: a bad data.path leaves nothing behind
    # (no study directory, no failed trial recorded in an existing study).
    from .data import load_data

    load_data(base)
    # ERROR, not WARNING: Optuna logs a failed (or interrupted) trial at WARNING with its traceback, before
    # the exception reaches the CLI, which prints it as one paragraph itself.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    out.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.create_study(
            study_name=str(base.name),
            storage=_storage(out),
            load_if_exists=True,
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=int(base.seed)),
            pruner=pruner(base.sweep),
        )
    except Exception as exc:
        from sqlalchemy.exc import DatabaseError

        if isinstance(exc, DatabaseError):
            raise ConfigError(f"'{out / 'study.db'}' is not a sweep study Optuna can read ({exc.orig}): choose another --out DIR.") from None
        raise
    from optuna.trial import TrialState

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # a previous sweep was killed mid-trial
        study.tell(stale.number, state=TrialState.FAIL)
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
    if not study.trials:
        current = {d.key: OmegaConf.select(base, d.key) for d in dims}
        if all(d.contains(current[d.key]) for d in dims):
            study.enqueue_trial(current)
        for params in enqueue:
            study.enqueue_trial(dict(params))

    def objective(trial) -> float:
        trial_overrides = [override(d.key, d.suggest(trial)) for d in dims]
        trial.set_user_attr("overrides", trial_overrides)
        cfg = load_config(source, [*overrides, *TRIAL_OVERRIDES, *trial_overrides], name=name)

        def on_validation(epoch: int, values: dict[str, float]) -> None:
            trial.report(values[metric], epoch)
            # After the last epoch there is no training left to save: such a trial ran its course and is
            # complete, judged by its best epoch (pruning it there would also hide it from the best trial).
            if epoch < int(cfg.train.epochs) and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {metric} {values[metric]:.4f} is below the median")

        if progress:
            print(f"trial {trial.number}: {' '.join(trial_overrides)}", flush=True)
        report = run(cfg, out / f"trial-{trial.number:03d}", progress=False, summary=False, on_validation=on_validation)
        value = report["validation"]["model"][metric]
        if progress:
            print(f"trial {trial.number}: validation {metric} {value:.4f} (best epoch {report['best_epoch']})", flush=True)
        return value

    if finished < trials:
        study.optimize(objective, n_trials=trials - finished, timeout=None if timeout_minutes is None else timeout_minutes * 60)
    summary = summarize(study, metric, source, overrides, name)
    (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot = plot_trials(summary, metric, out / "sweep.png")
    summary["plot"] = plot.name if plot else None
    (out / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(study, metric: str, source, overrides: Sequence[str], name: str | None) -> dict[str, Any]:
    trials = []
    for t in study.get_trials(deepcopy=False):
        intermediate = t.intermediate_values
        trials.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value,
            "epochs": len(intermediate),
            "last_validation": intermediate[max(intermediate)] if intermediate else None,
            "overrides": t.user_attrs.get("overrides", []),
        })
    complete = [t for t in trials if t["state"] == "complete" and t["value"] is not None and math.isfinite(t["value"])]
    best = max(complete, key=lambda t: t["value"]) if complete else None
    command = None
    if best is not None:  # the search's own settings (sweep.*) change nothing in a run: left out
        run_overrides = " ".join(shlex.quote(o) for o in [*overrides, *best["overrides"]] if not o.startswith("sweep."))
        command = f"crossrec-peft recipe {name} {run_overrides}" if name else f"crossrec-peft train {source} {run_overrides}"
    return {"metric": f"validation {metric}", "trials": trials, "best": best, "command": command}


def plot_trials(summary: dict[str, Any], metric: str, path: Path) -> Path | None:
    """Each trial's validation metric (complete: its best epoch; pruned: its last epoch) and the best so far."""
    from .plots import _figure, _save

    rows = [(t["number"], t["value"] if t["state"] == "complete" else t["last_validation"], t["state"]) for t in summary["trials"]]
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return None
    fig = _figure(7, 4)
    ax = fig.subplots()
    for state, marker in (("complete", "o"), ("pruned", "x")):
        points = [(n, v) for n, v, s in rows if s == state]
        if points:
            x, y = zip(*points)
            ax.scatter(x, y, marker=marker, label=state)
    best, line = float("-inf"), []
    for n, v, s in rows:
        if s == "complete":
            best = max(best, v)
        line.append((n, best if best > float("-inf") else None))
    drawn = [(n, b) for n, b in line if b is not None]
    if drawn:
        x, y = zip(*drawn)
        ax.step(x, y, where="post", label="best so far")
    ax.set(title="sweep", xlabel="trial", ylabel=f"validation {metric}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep: {summary['metric']} per trial")
    for column in ("trial", "state", "value", "epochs", "overrides"):
        table.add_column(column, justify="right" if column in ("trial", "value", "epochs") else "left")
    for t in summary["trials"]:
        value = t["value"] if t["value"] is not None else t["last_validation"]
        table.add_row(str(t["number"]), t["state"], "–" if value is None else f"{value:.4f}", str(t["epochs"]), " ".join(t["overrides"]))
    console = Console()
    console.print(table)
    if summary["best"] is None:
        console.print("no trial completed")
        return
    console.print(f"best: trial {summary['best']['number']}, {summary['metric']} {summary['best']['value']:.4f}")
    console.print(f"rerun it: {summary['command']}")
