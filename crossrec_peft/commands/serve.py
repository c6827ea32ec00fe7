"""`crossrec-peft serve PACKAGE [PACKAGE ...] [--data DOMAIN=DIR ...] [--host 127.0.0.1] [--port 8000]
[--max-batch 64] [--max-wait-ms 5] [--admin-token TOKEN]`: every package's domain behind one HTTP server
(FastAPI on uvicorn, the optional extra `crossrec-peft[serve]`), on the shared backbones, with micro-batched
mixed-domain scoring. SIGTERM or Ctrl-C stops it after the requests in flight finish. See docs/serving.md."""

from __future__ import annotations

from .argtypes import positive_float, split_named

NAME = "serve"
HELP = "serve recommendations of every loaded domain over HTTP (/v1 JSON API)"


def add_arguments(parser) -> None:
    parser.add_argument("packages", nargs="+", metavar="PACKAGE",
                        help="adapter package directories or hf://org/name[@revision]; NAME=PACKAGE loads one under the domain "
                             "name NAME (the same package twice, or two packages of one domain)")
    parser.add_argument("--data", action="append", default=[], metavar="DOMAIN=DIR", help="a domain's catalog directory (default: the data its package was trained on)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--max-batch", type=int, default=64, help="rows per micro-batch (default 64; 1 turns batching off)")
    parser.add_argument("--max-wait-ms", type=positive_float, default=5.0, help="how long a batch waits to fill (default 5 ms)")
    parser.add_argument("--max-k", type=int, default=100, help="the most items one request may ask for (default 100)")
    parser.add_argument("--max-history", type=int, default=200, help="the most items in one history (default 200)")
    parser.add_argument("--max-rows", type=int, default=256, help="the most histories, candidates or items in one request (default 256)")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body limit (default 1 MiB)")
    parser.add_argument("--admin-token", default=None,
                        help="allow POST /v1/domains for requests with this bearer token (default: off; also read from "
                             "CROSSREC_PEFT_ADMIN_TOKEN)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of the worker (default: the CPU count minus one, for the event loop; at least 1)")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    parser.add_argument("--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug"))


def run(args) -> None:
    import logging
    import os
    import signal
    import sys
    import time

    from ..errors import ConfigError
    from ..pipeline import quiet_libraries
    from ..recommender import Recommender, check_device
    from ..serve.settings import Settings

    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as exc:
        raise ConfigError(f"Serving needs the optional extra: pip install 'crossrec-peft[serve]' ({exc}).") from None

    settings = Settings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_k=args.max_k, max_history=args.max_history,
                        max_rows=args.max_rows, max_body_bytes=args.max_body_bytes,
                        admin_token=args.admin_token or os.environ.get("CROSSREC_PEFT_ADMIN_TOKEN") or None)
    catalogs = {}
    for entry in args.data:
        domain, sep, directory = entry.partition("=")
        if not sep or not domain or not directory:
            raise ConfigError(f"--data takes DOMAIN=DIR, got '{entry}'.")
        catalogs[domain] = directory
    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be from 1 to 65535, got {args.port}.")

    threads = args.threads if args.threads is not None else max(1, (os.cpu_count() or 1) - 1)
    if threads < 1:
        raise ConfigError(f"--threads must be positive, got {threads}.")
    if args.device:
        check_device(args.device, "--device")
    quiet_libraries()
    # The model runs in one worker thread while the event loop parses and answers HTTP on another core. Torch's
    # intra-op pool on every core would compete with the loop, and its threads spin-wait badly on a busy
    # machine: a batch of 8 recommendations measured 16x slower with 2 threads than with 1 on 2 loaded cores.
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    started = time.perf_counter()
    rec = Recommender(device=args.device)
    for spec in args.packages:
        name, path = split_named(spec)
        rec.load_adapter(path, name=name)
    unknown = [d for d in catalogs if d not in rec.domains]
    if unknown:
        from ..errors import did_you_mean

        raise ConfigError(f"--data names domain '{unknown[0]}', which is not loaded.{did_you_mean(unknown[0], rec.domains)} "
                          f"Loaded: {', '.join(rec.domains)}.")
    for domain, directory in catalogs.items():
        rec.set_catalog(directory, domain)
    # Bound now, before the catalog indexes are built (minutes for real catalogs), so that a port in use is an
    # error at once: uvicorn would find out only once they are ready, and exit 3 with its own log line.
    sock = _bind(args.host, args.port)
    print(f"crossrec-peft serve: {len(rec.domains)} domain(s) ({', '.join(rec.domains)}) loaded in "
          f"{time.perf_counter() - started:.1f} s; catalog indexes load or build in the background (GET /readyz)",
          file=sys.stderr, flush=True)

    config = uvicorn.Config(create_app(rec, settings), host=args.host, port=args.port, log_level=args.log_level,
                            timeout_graceful_shutdown=60, access_log=False)
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down; with Python's default SIGTERM action
    # that would kill the process (exit -15) after a clean shutdown. A handler of our own makes it a normal
    # return: exit code 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


def _bind(host: str, port: int):
    """A TCP socket bound to host:port for uvicorn to listen on; ConfigError naming --host or --port when the
    address is not this machine's, the port is taken, or binding it is not allowed."""
    import errno
    import socket

    from ..errors import ConfigError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"--host '{host}': not a known host name or address ({getattr(exc, 'strerror', None) or exc}); "
                          "give an address of this machine such as 127.0.0.1 or 0.0.0.0.") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart need not wait for TIME_WAIT
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"--port {port}: address {host}:{port} is already in use (another server is listening there); "
                              "choose another port with --port, or stop the program that holds it.") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host '{host}': not an address of this machine ({exc.strerror}); "
                              "give one of its addresses, such as 127.0.0.1 or 0.0.0.0.") from None
        if exc.errno == errno.EACCES:
            raise ConfigError(f"--port {port}: not allowed to listen on it ({exc.strerror}; ports below 1024 need privileges); "
                              "choose a port from 1024 to 65535.") from None
        raise ConfigError(f"--host '{host}' --port {port}: cannot listen there ({exc.strerror or exc}).") from None
    return sock
