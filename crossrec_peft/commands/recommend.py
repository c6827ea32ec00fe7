"""`crossrec-peft recommend ADAPTER [ADAPTER ...] --domain NAME --history ID [ID ...] [-k 10] [--explain] [--json]`:
the top-k items of a domain's catalog for one user history, with adapters loaded onto shared backbones;
`--explain` adds, per item, the history items that drove it and each modality's part (crossrec_peft/explain.py)."""

from __future__ import annotations

from .argtypes import positive_int, split_named

NAME = "recommend"
HELP = "recommend items of a domain's catalog for a history of item ids"


def add_arguments(parser) -> None:
    parser.add_argument(
        "adapters", nargs="+", metavar="ADAPTER",
        help="adapter package directories or hf://org/name[@revision]; NAME=ADAPTER loads one under the domain name NAME "
             "(the same package twice, or two packages of one domain)",
    )
    parser.add_argument("--domain", help="the domain to recommend in (default: the only one loaded)")
    parser.add_argument("--history", nargs="+", required=True, metavar="ID", help="the user's item ids, oldest first")
    parser.add_argument("-k", type=positive_int, default=10, help="how many items (default 10)")
    parser.add_argument("--data", help="the domain's catalog directory (default: the data its package was trained on)")
    parser.add_argument("--index", help="an index file built by `crossrec-peft index` (default: the cached one, built if missing)")
    parser.add_argument("--search", choices=("exact", "faiss"), default="exact", help="exact top-k (default) or FAISS (optional extra)")
    parser.add_argument("--keep-history", action="store_true", help="allow items of the history in the results")
    parser.add_argument("--explain", action="store_true", help="say per item which history items and modalities drove its score")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")


def run(args) -> None:
    import json

    from ..errors import ConfigError
    from ..pipeline import quiet_libraries
    from ..recommender import Recommender, check_device

    if args.device:
        check_device(args.device, "--device")
    quiet_libraries()
    rec = Recommender(device=args.device)
    for spec in args.adapters:
        name, path = split_named(spec)
        rec.load_adapter(path, name=name)
    domain = args.domain
    if domain is None:
        if len(rec.domains) > 1:
            raise ConfigError(f"Several domains are loaded ({', '.join(rec.domains)}): choose one with --domain.")
        domain = rec.domains[0]
    rec.set_domain(domain)
    if args.data:
        rec.set_catalog(args.data)
    if args.index:
        rec.use_index(args.index)
    items = rec.recommend(args.history, k=args.k, exclude_history=not args.keep_history, search=args.search)
    explanations = rec.explain(args.history, [i for i, _ in items]) if args.explain and items else [None] * len(items)
    if args.json:
        rows = []
        for (item, score), why in zip(items, explanations):
            row = {"item_id": item, "score": round(score, 6)}
            if why is not None:
                row["explanation"] = {k: v for k, v in why.items() if k not in ("item_id", "score")}
            rows.append(row)
        print(json.dumps({"domain": domain, "history": args.history, "k": args.k, "items": rows}, indent=2))
        return
    print(f"{domain}: top {len(items)} for a history of {len(args.history)} item(s)")
    for rank, ((item, score), why) in enumerate(zip(items, explanations), 1):
        print(f"{rank:>4}  {item:<24} {score:.4f}")
        if why is not None:
            drivers = ", ".join(f"{h['item_id']} {_percent(h['share'])}" for h in why["history"][:3])
            print(f"        because of ({why['method']}): {drivers}")
            if why["modalities"]:
                parts = ", ".join(f"{m['modality']} {m['contribution']:+.4f}" for m in why["modalities"])
                print(f"        modalities (score lost when masked): {parts}")
            co = why.get("cooccurrence")
            if co is not None:  # a hybrid package: the model's cosine plus the co-occurrence term
                if co.get("borrowed_from"):  # never bought in training: the term of its nearest items
                    source = "borrowed from " + ", ".join(f"{b['item_id']} {_percent(b['share'])}" for b in co["borrowed_from"][:3])
                else:
                    source = "bought with: " + (", ".join(f"{h['item_id']} {h['similarity']:.2f}" for h in co["history"][:3]) or "no history item")
                print(f"        model {why['model_score']:.4f} + co-occurrence {co['contribution']:+.4f} ({source})")


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"
