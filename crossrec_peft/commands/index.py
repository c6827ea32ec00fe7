"""`crossrec-peft index ADAPTER --data DIR [--out FILE] [--faiss]`: encode a domain's catalog with its adapter
into an index file (safetensors), reused by `recommend` until the adapter or the catalog changes."""

from __future__ import annotations

from .argtypes import positive_int

NAME = "index"
HELP = "build the catalog index of an adapter's domain"


def add_arguments(parser) -> None:
    parser.add_argument("adapter", help="an adapter package directory or hf://org/name[@revision]")
    parser.add_argument("--data", help="the catalog directory (default: the data the package was trained on)")
    parser.add_argument("--out", help="index file to write (default: in the cache, named by the adapter and catalog hashes)")
    parser.add_argument("--rebuild", action="store_true", help="encode the catalog again even if the index is current")
    parser.add_argument("--faiss", action="store_true", help="also report FAISS recall and latency against exact search")
    parser.add_argument("-k", type=positive_int, default=10, help="k for the FAISS recall (default 10)")
    parser.add_argument("--queries", type=positive_int, default=200, help="sampled users for the FAISS recall (default 200)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="items per encoding pass")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")


def check_index_out(value: str) -> None:
    """--out is checked before anything is loaded: a .safetensors path, and when it exists an index file
    (rebuilt or reused), never another file of the user's."""
    from pathlib import Path

    from ..errors import ConfigError, CrossrecError
    from ..index import check_outside_package, read_index

    path = Path(value).expanduser()
    if path.suffix != ".safetensors":
        raise ConfigError(f"--out must name a .safetensors file, got '{path}'.")
    check_outside_package(path, "--out")
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a directory; name a .safetensors file.")
    if path.exists():
        try:
            read_index(path)
        except CrossrecError:
            raise ConfigError(f"--out {path}: exists and is not a crossrec-peft index; it is not overwritten. Choose another file.") from None


def run(args) -> None:
    import time

    from ..pipeline import quiet_libraries
    from ..recommender import Recommender, check_device

    if args.out:
        check_index_out(args.out)
    if args.device:
        check_device(args.device, "--device")
    quiet_libraries()
    rec = Recommender(device=args.device, batch_size=args.batch_size)
    domain = rec.load_adapter(args.adapter, data=args.data)
    started = time.perf_counter()
    path = rec.build_index(out=args.out, rebuild=args.rebuild, progress=True)
    seconds = time.perf_counter() - started
    index = rec.index_info()
    print(f"{domain}: {index['items']:,} items x {index['dim']} in {path} ({seconds:.1f} s)")
    if args.faiss:
        report = rec.evaluate_faiss(k=args.k, queries=args.queries)
        print(
            f"FAISS IVF-Flat ({report['nlist']} lists, nprobe {report['nprobe']}): recall@{args.k} against exact "
            f"{report['recall']:.3f} over {report['queries']} sampled users; latency p50 exact "
            f"{report['exact_ms_p50']:.2f} ms, FAISS {report['faiss_ms_p50']:.2f} ms"
        )
