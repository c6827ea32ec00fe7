"""`crossrec-peft ls [KIND]`: registered backbones, methods, fusions, user encoders, objectives, domains."""

from __future__ import annotations

NAME = "ls"
HELP = "list registered backbones, methods, fusions, ..."


def add_arguments(parser) -> None:
    parser.add_argument("kind", nargs="?", help="one kind (backbone, method, fusion, user_encoder, objective, domain)")


def run(args) -> None:
    from .. import registry
    from ..errors import ConfigError, did_you_mean

    kinds = registry.REGISTRIES
    kind = args.kind
    if kind is not None:
        key = kind[:-1] if kind.endswith("s") and kind[:-1] in kinds else kind
        if key not in kinds:
            raise ConfigError(f"Unknown kind '{kind}'.{did_you_mean(kind, kinds)} Kinds: {', '.join(kinds)}.")
        kinds = {key: kinds[key]}
    for name, reg in kinds.items():
        print(f"{name}:")
        for entry in reg.entries():
            label = f"{entry.name}:<arg>" if entry.takes_argument else entry.name
            print(f"  {label:<14} {entry.description}")
            if entry.availability is not None:
                print(f"  {'':<14} available: {entry.availability()}")
