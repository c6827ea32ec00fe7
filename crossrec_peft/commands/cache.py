"""`crossrec-peft cache build RECIPE|FILE [key=value ...] | info | clear [NAME ...]`: the layer-state cache
that cached methods (frozen, side, top) read (docs/methods.md, "Cached methods"). It lives under
`data.cache_dir`, else $CROSSREC_PEFT_CACHE, else ~/.cache/crossrec-peft (the `layers/` folder there)."""

from __future__ import annotations

NAME = "cache"
HELP = "build, list or clear the layer-state cache of cached methods (frozen, side, top)"
OVERRIDES = "args"


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["build", "info", "clear"], help="build: encode a recipe's catalog; info: list caches; clear: delete them")
    parser.add_argument("args", nargs="*", help="build: a recipe name or YAML file, then key=value overrides; clear: cache names (default: all)")
    parser.add_argument("--cache-dir", help="the cache root (default: $CROSSREC_PEFT_CACHE or ~/.cache/crossrec-peft)")
    parser.add_argument("--json", action="store_true", help="info: print JSON")
    parser.add_argument("--quiet", action="store_true", help="build: no progress bar")


def run(args) -> None:
    {"build": _build, "info": _info, "clear": _clear}[args.action](args)


def _root(args, configured: str | None = None):
    from ..data.source import cache_root

    return cache_root(args.cache_dir or configured)


def _build(args) -> None:
    import time
    from pathlib import Path

    from .. import recipes
    from ..config import load_config
    from ..data import load_data
    from ..errors import ConfigError
    from ..model import build_model
    from ..pipeline import catalog_features, quiet_libraries

    if not args.args:
        raise ConfigError("Usage: crossrec-peft cache build RECIPE|FILE.yaml [key=value ...]")
    source, overrides = args.args[0], args.args[1:]
    if args.cache_dir:
        overrides = [*overrides, f"data.cache_dir={args.cache_dir}"]
    is_file = Path(source).suffix in (".yaml", ".yml") or Path(source).is_file()
    cfg = load_config(Path(source) if is_file else recipes.path(source), overrides, name=None if is_file else source)
    quiet_libraries()
    model = build_model(cfg.model)
    cached = [n for n, enc in model.modalities.items() if callable(getattr(enc.method, "cached_features", None)) and enc.method.keep(enc.backbone) is not None]
    if not cached:
        raise ConfigError(
            f"{source}: no modality uses a cached method (frozen, side, top); nothing to cache. Methods: "
            + ", ".join(f"{n}: {enc.method.__class__.__name__.lower()}" for n, enc in model.modalities.items())
        )
    data = load_data(cfg)
    started = time.perf_counter()
    catalog_features(model, data, cfg, progress=not args.quiet)
    seconds = time.perf_counter() - started
    items = len(data.item_ids)
    print(f"{items:,} items, modalities {', '.join(cached)}: cache ready in {seconds:.1f} s ({items / max(seconds, 1e-9):,.0f} items/s including hits)")
    _info(args, configured=cfg.data.cache_dir)


def _info(args, configured: str | None = None) -> None:
    import json

    from ..cache import describe

    root = _root(args, configured)
    entries = describe(root)
    if args.json:
        print(json.dumps({"root": str(root), "caches": entries}, indent=2))
        return
    if not entries:
        print(f"no layer caches under {root}")
        return
    for e in entries:
        keep = e.get("keep") or {}
        what = keep.get("kind", "?") + (f"@{keep['start']}" if "start" in keep else "")
        problem = f"  [{e['problem']}]" if e.get("problem") else ""
        print(f"{e['name']}: {e.get('backbone')} {what} {e.get('dtype')}, {e['items']:,} items in {e['shards']} shards, {e['bytes'] / 2**20:,.1f} MiB{problem}")
    print(f"total {sum(e['bytes'] for e in entries) / 2**20:,.1f} MiB under {root / 'layers'}")


def _clear(args) -> None:
    import shutil

    from ..cache import describe, layer_root
    from ..errors import ConfigError

    root = _root(args)
    entries = {e["name"]: e for e in describe(root)}
    names = list(args.args) or list(entries)
    unknown = [n for n in names if n not in entries]
    if unknown:
        from ..errors import did_you_mean

        raise ConfigError(
            f"No layer cache named '{unknown[0]}' under {layer_root(root)}.{did_you_mean(unknown[0], entries)} "
            "List them with `crossrec-peft cache info`."
        )
    freed = 0
    for name in names:
        freed += entries[name]["bytes"]
        shutil.rmtree(layer_root(root) / name)
    print(f"removed {len(names)} layer cache(s), {freed / 2**20:,.1f} MiB, from {layer_root(root)}")
