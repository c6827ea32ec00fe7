"""Load test of `crossrec-peft serve` with the three shipped adapters and their demo catalogs (2,000 items each).

    python benchmarks/serve.py [--clients 32] [--requests 1500] [--time-limit 120]

Real server processes on 127.0.0.1 (free ports; nothing else is contacted) and async httpx clients in
`--client-processes` processes: `--clients` concurrent clients send `--requests` POST /v1/recommend requests (histories of 1-12
random catalog items, k=10) after a warm-up, each run bounded by `--time-limit` seconds. Runs, side by side:

    one domain, batched      the three-domain server, every request to ecommerce (--max-batch 64)
    three domains, batched   the same server, requests spread over the three domains
    three domains, unbatched a server started with --max-batch 1 (one request per worker call)

Reported: requests/s, p50/p95/p99 latency, errors, the batch-size distribution (from the server's
/metrics), the server's and the clients' CPU time per request, the load average around each run (the machine
is shared), and the peak RSS (VmHWM) of the
three-domain server against three single-domain servers. Writes benchmarks/results/serve.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks._results import write_results  # noqa: E402

DOMAINS = ["ecommerce", "finance", "video"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`crossrec-peft serve` in a subprocess, ready when /readyz says so."""

    def __init__(self, domains: list[str], *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        packages = [str(ROOT / "adapters" / d) for d in domains]
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-m", "crossrec_peft", "serve", *packages, "--host", "127.0.0.1",
                                      "--port", str(self.port), "--device", "cpu", "--max-rows", "256", *flags],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait_ready(self, timeout: float = 900) -> "Server":
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server not ready in time")
            time.sleep(0.5)

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def batch_histogram(self) -> dict[str, float]:
        """Cumulative counts of crossrec_batch_requests (requests per micro-batch) by bucket, plus sum and count."""
        text = httpx.get(f"{self.url}/metrics", timeout=30).text
        out = {}
        for line in text.splitlines():
            m = re.match(r'crossrec_batch_requests_bucket\{le="([^"]+)"\} (\S+)', line)
            if m:
                out[m.group(1)] = float(m.group(2))
            m = re.match(r"crossrec_batch_requests_(sum|count) (\S+)", line)
            if m:
                out[m.group(1)] = float(m.group(2))
        return out

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def _client(url: str, bodies: list[dict], clients: int, deadline_epoch: float, start_epoch: float) -> dict:
    """One client process: `clients` concurrent httpx connections working through `bodies`."""
    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        await client.get("/healthz")  # connect before the clock starts
        await asyncio.sleep(max(0.0, start_epoch - time.time()))

        async def worker():
            nonlocal errors
            for body in queue:
                if time.time() > deadline_epoch:
                    return
                started = time.perf_counter()
                try:
                    r = await client.post("/v1/recommend", json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok

        cpu, begin = time.process_time(), time.time()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return {"latencies": latencies, "errors": errors, "begin": begin, "end": time.time(), "cpu": time.process_time() - cpu}


def _client_process(args: tuple) -> dict:
    return asyncio.run(_client(*args))


def load(url: str, bodies: list[dict], clients: int, time_limit: float, processes: int) -> dict:
    """`clients` concurrent clients spread over `processes` client processes (one httpx client costs more CPU per
    request than the server does; several processes keep the load generator from being what is measured)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    processes = max(1, min(processes, clients))
    start = time.time() + 5.0  # every process started, connected and waiting
    deadline = start + time_limit
    shares = [clients // processes + (i < clients % processes) for i in range(processes)]
    slices = [bodies[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(_client_process, [(url, b, c, deadline, start) for b, c in zip(slices, shares)]))
    elapsed = max(p["end"] for p in parts) - min(p["begin"] for p in parts)
    ms = sorted(1000 * x for p in parts for x in p["latencies"])

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(round(q / 100 * (len(ms) - 1))))]

    return {"requests": len(ms), "seconds": elapsed, "rps": len(ms) / elapsed, "errors": sum(p["errors"] for p in parts),
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99), "mean_ms": statistics.fmean(ms),
            "client_cpu_ms_per_request": 1000 * sum(p["cpu"] for p in parts) / max(1, len(ms))}


def make_bodies(ids: dict[str, list[str]], domains: list[str], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        domain = domains[i % len(domains)]
        bodies.append({"domain": domain, "history": rng.sample(ids[domain], rng.randint(1, 12)), "k": 10})
    return bodies


def batch_stats(before: dict, after: dict) -> dict:
    count = after.get("count", 0) - before.get("count", 0)
    total = after.get("sum", 0) - before.get("sum", 0)
    buckets, previous = {}, 0.0
    for le in [k for k in after if k not in ("sum", "count")]:
        cumulative = after[le] - before.get(le, 0)
        buckets[le] = cumulative - previous
        previous = cumulative
    return {"batches": count, "mean_requests_per_batch": total / count if count else 0.0,
            "distribution": {k: v for k, v in buckets.items() if v}}


def run(server: Server, name: str, bodies: list[dict], args, clients: int | None = None) -> dict:
    clients = clients or args.clients
    processes = min(args.client_processes, clients)
    load(server.url, bodies[: args.warmup], clients, args.time_limit, processes)  # warm-up
    before, load_before = server.batch_histogram(), os.getloadavg()[0]
    cpu_before = server.cpu_seconds()
    result = load(server.url, bodies[args.warmup :], clients, args.time_limit, processes)
    result["server_cpu_ms_per_request"] = 1000 * (server.cpu_seconds() - cpu_before) / max(1, result["requests"])
    result.update(batching=batch_stats(before, server.batch_histogram()), load_before=load_before, load_after=os.getloadavg()[0])
    print(f"{name:<26} {result['rps']:7.1f} req/s  p50 {result['p50_ms']:7.1f}  p95 {result['p95_ms']:7.1f}  "
          f"p99 {result['p99_ms']:7.1f} ms  errors {result['errors']}  cpu/req server {result['server_cpu_ms_per_request']:.2f} "
          f"client {result['client_cpu_ms_per_request']:.2f} ms  batch {result['batching']['mean_requests_per_batch']:.1f}  "
          f"load {load_before:.1f}->{result['load_after']:.1f}", flush=True)
    return {"name": name, "clients": clients, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=1500, help="requests per run (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--time-limit", type=float, default=120, help="seconds per run at most")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--light-clients", type=int, default=4, help="concurrent clients of the below-saturation run")
    parser.add_argument("--client-processes", type=int, default=4, help="processes the concurrent clients are spread over")
    parser.add_argument("--skip-memory", action="store_true", help="leave out the three single-domain servers")
    args = parser.parse_args()
    if args.clients < 1 or args.requests < 1 or args.time_limit <= 0:
        parser.error("--clients, --requests and --time-limit must be positive")

    from crossrec_peft import Recommender

    # Catalog ids of each domain (the index each server builds or reads from the cache).
    rec = Recommender(device="cpu")
    ids = {}
    for domain in DOMAINS:
        rec.load_adapter(ROOT / "adapters" / domain)
        ids[domain] = rec._catalog(rec._get(domain)).item_ids
    del rec
    total = args.warmup + args.requests
    one = make_bodies(ids, ["ecommerce"], total, seed=1)
    mixed = make_bodies(ids, DOMAINS, total, seed=2)

    print(f"{args.clients} clients, {args.requests} requests per run after {args.warmup} warm-up; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    runs, memory = [], {}
    batched = Server(DOMAINS, "--max-batch", "64", "--max-wait-ms", str(args.max_wait_ms)).wait_ready()
    try:
        runs.append(run(batched, "one domain, batched", one, args))
        runs.append(run(batched, "three domains, batched", mixed, args))
        # Latency below saturation: the same traffic from a few clients.
        light = make_bodies(ids, DOMAINS, args.warmup + args.requests // 3, seed=4)
        runs.append(run(batched, "three domains, batched", light, args, clients=args.light_clients))
        memory["three domains, one process"] = batched.peak_rss_mb()
    finally:
        batched_exit = batched.stop()
    unbatched = Server(DOMAINS, "--max-batch", "1").wait_ready()
    try:
        runs.append(run(unbatched, "three domains, unbatched", mixed, args))
    finally:
        unbatched_exit = unbatched.stop()

    if not args.skip_memory:
        singles = []
        for domain in DOMAINS:
            server = Server([domain]).wait_ready()
            try:
                load(server.url, make_bodies(ids, [domain], 50, seed=3), 4, args.time_limit, 1)
                singles.append(server.peak_rss_mb())
            finally:
                server.stop()
        memory.update({f"{d} alone": v for d, v in zip(DOMAINS, singles)})
        memory["three single-domain processes"] = sum(singles)

    by = {r["name"]: r for r in runs if r["clients"] == args.clients}
    ratios = {
        "mixed / one-domain throughput": by["three domains, batched"]["rps"] / by["one domain, batched"]["rps"],
        "batched / unbatched throughput": by["three domains, batched"]["rps"] / by["three domains, unbatched"]["rps"],
    }
    if "three single-domain processes" in memory:
        ratios["one process / three processes RSS"] = memory["three domains, one process"] / memory["three single-domain processes"]

    print("\n| traffic | batching | clients | req/s | p50 ms | p95 ms | p99 ms | errors | mean batch | server CPU ms/req | load avg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        traffic, batching = r["name"].split(", ")
        print(f"| {traffic} | {batching} | {r['clients']} | {r['rps']:.1f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
              f"{r['errors']} | {r['batching']['mean_requests_per_batch']:.1f} | {r['server_cpu_ms_per_request']:.2f} | "
              f"{r['load_before']:.1f}-{r['load_after']:.1f} |")
    print("\n| process | peak RSS MB |\n|---|---|")
    for name, mb in memory.items():
        print(f"| {name} | {mb:.0f} |")
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    print(f"server exit codes after SIGTERM: {batched_exit}, {unbatched_exit}")
    write_results("serve", {"clients": args.clients, "requests": args.requests, "warmup": args.warmup, "cpus": os.cpu_count(),
                            "runs": runs, "peak_rss_mb": memory, "ratios": ratios,
                            "exit_codes": [batched_exit, unbatched_exit]})


if __name__ == "__main__":
    main()
