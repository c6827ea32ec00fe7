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
    """The cache root; one that exists but is not a directory (or whose layers/ is not) is the user's mistake,
    named by where it came from (--cache-dir, data.cache_dir or $CROSSREC_PEFT_CACHE)."""
    import os

    from ..data.source import cache_root
    from ..errors import ConfigError

    root = cache_root(args.cache_dir or configured)
    source = "--cache-dir" if args.cache_dir else "data.cache_dir" if configured else (
        "$CROSSREC_PEFT_CACHE" if os.environ.get("CROSSREC_PEFT_CACHE") else "the default cache root")
    for path in (root, root / "layers"):
        if path.exists() and not path.is_dir():
            raise ConfigError(
                f"{source} {root}: {path} is a file, not a directory, so it holds no layer caches. "
                "Point --cache-dir (or $CROSSREC_PEFT_CACHE) at the cache directory itself."
            )
    return root


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
        what = str(keep.get("kind", "?")) + (f"@{keep['start']}" if "start" in keep else "")
        problem = f"  [{e['problem']}]" if e.get("problem") else ""
        print(f"{e['name']}: {e.get('backbone')} {what} {e.get('dtype')}, {e['items']:,} items in {e['shards']} shards, {e['bytes'] / 2**20:,.1f} MiB{problem}")
    print(f"total {sum(e['bytes'] for e in entries) / 2**20:,.1f} MiB under {root / 'layers'}")


def _clear(args) -> None:
    """Delete layer caches: the named ones, else every one. Only directories holding an index.json (the marker
    the cache writes) are caches; other folders under layers/ are left alone and listed. Named caches are all
    checked before anything is deleted, so a refused command removes nothing."""
    import shutil

    from ..cache import describe, layer_root
    from ..errors import ConfigError

    root = _root(args)
    base = layer_root(root)
    entries = {e["name"]: e for e in describe(root)}
    caches = [n for n, e in entries.items() if e.get("cache")]
    if args.args:
        names = list(dict.fromkeys(args.args))
        unknown = [n for n in names if n not in entries]
        if unknown:
            from ..errors import did_you_mean

            raise ConfigError(
                f"No layer cache named '{unknown[0]}' under {base}.{did_you_mean(unknown[0], caches)} "
                "List them with `crossrec-peft cache info`."
            )
        foreign = [n for n in names if not entries[n].get("cache")]
        if foreign:
            raise ConfigError(
                f"{base / foreign[0]} is not a layer cache (it holds no index.json), so `cache clear` does not delete "
                "it; nothing was removed. Delete it by hand if it is really meant to go."
            )
        skipped: list[str] = []
    else:
        names = caches
        skipped = [n for n, e in entries.items() if not e.get("cache")]
    freed = 0
    for name in names:
        freed += entries[name]["bytes"]
        shutil.rmtree(base / name)
    print(f"removed {len(names)} layer cache(s), {freed / 2**20:,.1f} MiB, from {base}")
    if skipped:
        print(f"left alone {len(skipped)} folder(s) that are not layer caches (no index.json): {', '.join(skipped)}")
