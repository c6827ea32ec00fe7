"""The FastAPI application: /v1 endpoints over one Recommender holding every domain.

    POST /v1/recommend      {domain, history, k, exclude_history, explain} -> {domain, items}
    POST /v1/score          {domain | domains, histories, candidates} -> {scores}
    POST /v1/items/encode   {domain, items} -> {domain, dim, vectors}
    GET  /v1/domains        each domain's package, backbones, methods, catalog and index
    POST /v1/domains        {package, data?, name?}: load a further domain (admin token only; 403 otherwise)
    GET  /healthz           the process answers        GET /readyz  every catalog index is ready (503 before)
    GET  /metrics           Prometheus text

Handlers check what is cheap to check (limits of the request) and queue the rest for the micro-batcher; the
model runs in the batcher's worker thread only. See docs/serving.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from ..batched import Query
from . import errors, schemas
from .batcher import Job, MicroBatcher
from .errors import ApiError
from .jobs import Encode, Recommend, Runner, Score
from .metrics import Metrics, RequestMetrics
from .settings import Settings

if TYPE_CHECKING:
    from ..recommender import Recommender

log = logging.getLogger("crossrec_peft.serve")
ERRORS = {status: {"model": schemas.ErrorResponse} for status in (400, 403, 404, 413, 415, 500)}


def domain_info(rec: "Recommender", name: str) -> dict[str, Any]:
    """What GET /v1/domains says of one domain (never builds anything: the index is shown once ready)."""
    d = rec._domains[name]
    modalities = d.manifest["model"]["modalities"]
    index = None
    if d.index is not None:
        index = {"items": len(d.index.item_ids), "dim": int(d.index.content.shape[1]), "path": str(d.index_path) if d.index_path else None}
    return {
        "name": name,
        "package": str(d.directory),
        "package_id": d.manifest.get("id"),
        "backbones": {m: str(cfg["backbone"]["name"]) for m, cfg in modalities.items()},
        "methods": {m: str(cfg["method"]["name"]) for m, cfg in modalities.items()},
        "user_encoder": str(d.manifest["model"]["user_encoder"]["name"]),
        "catalog_size": len(d.index.item_ids) if d.index is not None else (len(d.catalog.item_ids) if d.catalog else None),
        "index": index,
    }


def _forget_backbones(rec: "Recommender", kept: set[str]) -> None:
    """Drop the backbones a failed load added (all but `kept`): a failed POST /v1/domains leaves the server as
    it was, without a backbone no domain uses held in memory."""
    for key in set(rec._backbones) - kept:
        del rec._backbones[key]


def create_app(rec: "Recommender", settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()
    runner = Runner(rec)
    state: dict[str, Any] = {"ready": False, "startup_error": None}

    def warm_up() -> float:
        """Every domain's catalog index, from the cache or built now; returns the seconds it took."""
        started = time.perf_counter()
        for name in rec.domains:
            rec._ensure_index(rec._domains[name])
        return time.perf_counter() - started

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = MicroBatcher(runner, max_batch=settings.max_batch, max_wait_s=settings.max_wait_ms / 1000, metrics=metrics)
        batcher.start()
        app.state.batcher = batcher
        app.state.loop = asyncio.get_running_loop()  # for code outside the loop (tests, embedding) to schedule on it
        metrics.domains.set(len(rec.domains))

        async def ready() -> None:
            try:
                seconds = await batcher.submit(Job("call", warm_up, alone=True))
                log.warning("crossrec-peft serve: catalog indexes of %s ready in %.1f s", ", ".join(rec.domains), seconds)
                state["ready"] = True
            except Exception as exc:  # noqa: BLE001  (reported by /readyz and in the log)
                state["startup_error"] = f"{type(exc).__name__}: {exc}"
                log.error("crossrec-peft serve: the catalog indexes could not be built: %s", exc)

        warming = asyncio.get_running_loop().create_task(ready())
        try:
            yield
        finally:
            await batcher.stop()  # in-flight and queued requests finish first
            warming.cancel()

    app = FastAPI(title="crossrec-peft", version="1", lifespan=lifespan,
                  description="Recommendations of every loaded domain from one process (docs/serving.md).")
    errors.install(app)

    async def submit(request: Request, job: Job) -> Any:
        return await request.app.state.batcher.submit(job)

    def label(request: Request, domain: str | None) -> None:
        request.state.domain = domain if domain in rec._domains else "-"

    def limit(value: int, most: int, field: str, what: str) -> None:
        if value > most:
            raise ApiError(400, "limit_exceeded", f"{field}: {value} {what}, more than the server's limit of {most}.", field)

    @app.post("/v1/recommend", response_model=schemas.RecommendResponse, responses=ERRORS)
    async def recommend(body: schemas.RecommendRequest, request: Request):
        label(request, body.domain)
        limit(body.k, settings.max_k, "k", "items asked for")
        limit(len(body.history), settings.max_history, "history", "items")
        query = Query([h if isinstance(h, dict) else str(h) for h in body.history], body.k, body.domain, body.exclude_history)
        result = await submit(request, Job("recommend", Recommend(query, body.explain)))
        if body.explain:
            items = [{"item_id": i, "score": s, "explanation": {k: v for k, v in why.items() if k not in ("item_id", "score")}}
                     for i, s, why in result]
        else:
            items = [{"item_id": i, "score": s, "explanation": None} for i, s in result]
        return JSONResponse({"domain": body.domain, "items": items})

    @app.post("/v1/score", response_model=schemas.ScoreResponse, responses=ERRORS)
    async def score(body: schemas.ScoreRequest, request: Request):
        if (body.domain is None) == (body.domains is None):
            raise ApiError(400, "invalid_value", "Give either domain (one for every history) or domains (one per history).", "domain")
        rows = len(body.histories)
        if rows == 0:
            raise ApiError(400, "invalid_value", "histories: give at least one history.", "histories")
        limit(rows, settings.max_rows, "histories", "histories")
        domains = [body.domain] * rows if body.domains is None else list(body.domains)
        if len(domains) != rows:
            raise ApiError(400, "invalid_value", f"domains has {len(domains)} entries for {rows} histories: give one per history.", "domains")
        label(request, domains[0] if len(set(domains)) == 1 else "mixed")
        cands = body.candidates
        per_row = bool(cands) and all(isinstance(c, list) for c in cands)
        lists = [list(c) for c in cands] if per_row else [list(cands)] * rows
        if len(lists) != rows:
            raise ApiError(400, "invalid_value", f"{len(lists)} candidate lists for {rows} histories: give one list, or one per history.", "candidates")
        if not lists[0] or len({len(c) for c in lists}) > 1:
            raise ApiError(400, "invalid_value", "candidates: every history needs the same number (at least one) of candidates.", "candidates")
        for r, history in enumerate(body.histories):
            limit(len(history), settings.max_history, f"histories[{r}]", "items")
        limit(len(lists[0]), settings.max_rows, "candidates", "candidates per history")
        norm = lambda items: [i if isinstance(i, dict) else str(i) for i in items]  # noqa: E731
        job = Job("score", Score([norm(h) for h in body.histories], [norm(c) for c in lists], domains), rows=rows)
        return JSONResponse({"scores": await submit(request, job)})

    @app.post("/v1/items/encode", response_model=schemas.EncodeResponse, responses=ERRORS)
    async def encode(body: schemas.EncodeRequest, request: Request):
        label(request, body.domain)
        if not body.items:
            raise ApiError(400, "invalid_value", "items: give at least one item.", "items")
        limit(len(body.items), settings.max_rows, "items", "items")
        items = [i if isinstance(i, dict) else str(i) for i in body.items]
        vectors = await submit(request, Job("encode", Encode(body.domain, items), rows=len(items)))
        return JSONResponse({"domain": body.domain, "dim": len(vectors[0]), "vectors": vectors})

    @app.get("/v1/domains", response_model=schemas.DomainsResponse)
    async def domains():
        return JSONResponse({"domains": [domain_info(rec, name) for name in rec.domains]})

    @app.post("/v1/domains", response_model=schemas.DomainInfo, status_code=201, responses=ERRORS)
    async def load_domain(body: schemas.LoadDomainRequest, request: Request):
        if settings.admin_token is None:
            raise ApiError(403, "forbidden", "Loading domains is off: start the server with --admin-token to allow it.")
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(token.encode(), settings.admin_token.encode()):
            raise ApiError(403, "forbidden", "A valid admin token is needed (Authorization: Bearer TOKEN).")

        def load() -> dict[str, Any]:
            backbones = set(rec._backbones)
            try:
                name = rec.load_adapter(body.package, data=body.data, name=body.name)
            except Exception:
                _forget_backbones(rec, backbones)
                raise
            try:
                rec._ensure_index(rec._domains[name])
            except Exception:
                d = rec._domains.pop(name)  # a domain that cannot answer is not kept half-loaded
                for backbone in d.shared.values():
                    backbone.remove(name)
                _forget_backbones(rec, backbones)
                raise
            return domain_info(rec, name)

        info = await submit(request, Job("call", load, alone=True))
        metrics.domains.set(len(rec.domains))
        label(request, info["name"])
        return JSONResponse(info, status_code=201)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if state["ready"]:
            return {"ready": True, "domains": rec.domains}
        body = {"ready": False, "domains": rec.domains, "error": state["startup_error"]}
        return JSONResponse(body, status_code=503)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    routes = {r.path for r in app.routes}
    # Outermost first: metrics see every response, including the body limit's 413 and 415.
    app.add_middleware(errors.BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=routes)
    app.state.settings, app.state.metrics, app.state.recommender = settings, metrics, rec
    return app
