"""Prometheus metrics (prometheus-client), one registry per application so that several apps in one process
(tests) keep their own counts. GET /metrics renders them in the text exposition format."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets from 1 ms to 10 s (a batch of explanations on a busy CPU can take seconds).
LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("crossrec_requests", "HTTP requests by endpoint, domain and status code",
                                ["endpoint", "domain", "status"], registry=r)
        self.latency = Histogram("crossrec_request_seconds", "Request latency by endpoint and domain",
                                 ["endpoint", "domain"], buckets=LATENCY, registry=r)
        self.batch_rows = Histogram("crossrec_batch_rows", "Rows (histories and items to encode) per micro-batch",
                                    buckets=SIZES, registry=r)
        self.batch_requests = Histogram("crossrec_batch_requests", "Requests per micro-batch", buckets=SIZES, registry=r)
        self.batch_seconds = Histogram("crossrec_batch_seconds", "Time the worker spent on one micro-batch",
                                       buckets=LATENCY, registry=r)
        self.queue_depth = Gauge("crossrec_queue_depth", "Requests waiting for the worker", registry=r)
        self.domains = Gauge("crossrec_domains", "Domains loaded", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: counts and times every request. The endpoint label is the route's path for known
    routes ("other" otherwise, so that scanners cannot grow the label set); the domain label is what the
    handler put in request.state.domain (a loaded domain's name) or "-"."""

    def __init__(self, app, metrics: Metrics, routes: set[str]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def observe(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            path = scope["path"] if scope["path"] in self.routes else "other"
            domain = str(scope.get("state", {}).get("domain", "-"))
            self.metrics.requests.labels(path, domain, str(status["code"])).inc()
            self.metrics.latency.labels(path, domain).observe(time.perf_counter() - started)
