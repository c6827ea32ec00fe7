"""Built-in recipes: YAML files in the repository's top-level recipes/ folder, shipped inside the wheel."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import yaml

from .errors import ConfigError, did_you_mean


def recipe_dir() -> Path:
    packaged = Path(str(resources.files("crossrec_peft"))) / "recipes"
    if packaged.is_dir():  # an installed wheel
        return packaged
    source = Path(__file__).resolve().parent.parent / "recipes"  # a source checkout or editable install
    if source.is_dir():
        return source
    raise ConfigError("The built-in recipes are missing from this installation of crossrec-peft; reinstall it.")


def names() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.yaml"))


def path(name: str) -> Path:
    p = recipe_dir() / f"{name}.yaml"
    if not p.is_file():
        known = names()
        raise ConfigError(
            f"Unknown recipe '{name}'.{did_you_mean(name, known)} Built-in recipes: {', '.join(known)}. "
            "To run your own file use `crossrec-peft train FILE.yaml`."
        )
    return p


def describe() -> list[tuple[str, str]]:
    out = []
    for name in names():
        data = yaml.safe_load(path(name).read_text()) or {}
        out.append((name, str(data.get("description", "")).strip()))
    return out


def copy(name: str, dest: str | Path) -> Path:
    source = path(name)
    dest = Path(dest)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists():
        raise ConfigError(f"'{dest}' already exists; crossrec-peft does not overwrite it. Choose another destination.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)
    return dest
