"""The HTTP API against a live server (uvicorn on a free local port, real requests through httpx) serving two
tiny domains: answers equal to the Recommender's, the bad-input table, admin loading, micro-batching, the
event loop staying free during a batch, graceful shutdown, metrics and the OpenAPI schema."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from crossrec_peft import Recommender
from crossrec_peft.serve import create_app
from crossrec_peft.serve.batcher import Job
from crossrec_peft.serve.settings import Settings
from tests._packages import hybrid_choice, make_package
from tests.conftest import small_layout
from tests.serve.live import LiveServer, serving

SETTINGS = dict(max_batch=16, max_wait_ms=20, max_k=50, max_history=20, max_rows=8, max_body_bytes=4096)
TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def packages(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    data = small_layout(root / "data", num_items=16)
    return {
        "shop": make_package(tiny_bert, root / "pk", "shop", "lora", seed=1, data=data),
        "bank": make_package(tiny_bert, root / "pk", "bank", "bottleneck", seed=2, data=data),
        "later": make_package(tiny_bert, root / "pk", "later", "ia3", seed=3, data=data),
        "hybrid": make_package(tiny_bert, root / "pk", "hyb", "lora", seed=4, data=data, hybrid=hybrid_choice(16, 3.0)),
    }


@pytest.fixture(scope="module")
def rec(packages):
    rec = Recommender(device="cpu")
    rec.load_adapter(packages["shop"])
    rec.load_adapter(packages["bank"])
    return rec


@pytest.fixture(scope="module")
def server(rec):
    with serving(create_app(rec, Settings(**SETTINGS, admin_token=TOKEN))) as live:
        yield live


def post(server, path, body, **kw):
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)


def recommend(server, **body):
    return post(server, "/v1/recommend", {"domain": "shop", "history": ["i1", "i2"], **body})


@pytest.mark.parametrize("body", [
    {"domain": "shop", "history": ["i1", "i2", "i3"], "k": 5},
    {"domain": "bank", "history": ["i7"], "k": 16 - 1},
    {"domain": "bank", "history": ["i7", "i8"], "k": 16, "exclude_history": False},
    {"domain": "shop", "history": ["i4", {"title": "a new blue lamp", "category": "c1"}], "k": 3},
])
def test_recommend_equals_the_recommender(server, rec, body):
    r = post(server, "/v1/recommend", body)
    assert r.status_code == 200, r.text
    got = r.json()
    expected = rec.recommend_many([{k: v for k, v in body.items()}])[0]
    assert got["domain"] == body["domain"] and [i["item_id"] for i in got["items"]] == [i for i, _ in expected]
    assert [i["score"] for i in got["items"]] == pytest.approx([s for _, s in expected], abs=1e-5)
    if all(isinstance(h, str) for h in body["history"]):
        alone = rec.recommend(body["history"], k=body["k"], domain=body["domain"], exclude_history=body.get("exclude_history", True))
        assert [i for i, _ in alone] == [i for i, _ in expected]


def test_explanations_equal_the_recommender(server, rec):
    got = recommend(server, k=3, explain=True).json()
    expected = rec.explain(["i1", "i2"], [i["item_id"] for i in got["items"]], domain="shop")
    for item, why in zip(got["items"], expected):
        assert item["explanation"]["method"] == why["method"] == "exact"
        assert [h["item_id"] for h in item["explanation"]["history"]] == [h["item_id"] for h in why["history"]]
        assert sum(h["contribution"] for h in item["explanation"]["history"]) == pytest.approx(item["score"], abs=1e-5)
        assert [m["modality"] for m in item["explanation"]["modalities"]] == ["text"]


def test_a_hybrid_domain_serves_its_ranking_and_explains_the_term(packages):
    """A package with co-occurrence neighbours: /v1/recommend ranks and scores as its Recommender does, and an
    explanation splits each score into the model's cosine and the co-occurrence term."""
    rec = Recommender.from_pretrained(packages["hybrid"], device="cpu")
    with serving(create_app(rec, Settings(**SETTINGS))) as live:
        body = {"domain": "hyb", "history": ["i1", "i2", "i3"], "k": 4, "explain": True}
        got = post(live, "/v1/recommend", body).json()["items"]
        expected = rec.recommend(body["history"], k=4)
        assert [i["item_id"] for i in got] == [i for i, _ in expected]
        assert [i["score"] for i in got] == pytest.approx([s for _, s in expected], abs=1e-5)
        for item in got:
            why = item["explanation"]
            assert why["model_score"] + why["cooccurrence"]["contribution"] == pytest.approx(item["score"], abs=1e-5)
            assert why["cooccurrence"]["weight"] == 3.0
        assert any(i["explanation"]["cooccurrence"]["history"] for i in got)  # the term is at work in this top 4


def test_score_and_encode_equal_the_recommender(server, rec):
    import torch

    body = {"domains": ["shop", "bank", "shop"], "histories": [["i1", "i2"], ["i3"], ["i5", {"title": "new", "category": "c0"}]],
            "candidates": [["i4", "i6"], ["i4", "i9"], ["i0", "i1"]]}
    r = post(server, "/v1/score", body)
    assert r.status_code == 200, r.text
    expected = rec.score(body["histories"], body["candidates"], domains=body["domains"])
    torch.testing.assert_close(torch.tensor(r.json()["scores"]), expected, atol=1e-5, rtol=1e-4)
    items = [{"title": "a red lamp", "category": "c2"}, "i3"]
    r = post(server, "/v1/items/encode", {"domain": "bank", "items": items})
    alone = rec.encode_items(items, domains="bank")
    assert r.status_code == 200 and r.json()["dim"] == alone.shape[1] == 32
    torch.testing.assert_close(torch.tensor(r.json()["vectors"]), alone, atol=1e-5, rtol=1e-4)


def test_concurrent_mixed_domain_requests_are_batched_and_each_answered_as_alone(server, rec):
    histories = [[f"i{(3 * n + j) % 16}" for j in range(1 + n % 4)] for n in range(40)]
    domains = ["shop" if n % 3 else "bank" for n in range(40)]

    def batches() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith("crossrec_batch_requests_count")))

    before = batches()

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/v1/recommend", json={"domain": d, "history": h, "k": 4})
                                          for d, h in zip(domains, histories)))

    responses = asyncio.run(run())
    for r, d, h in zip(responses, domains, histories):
        assert r.status_code == 200, r.text
        alone = rec.recommend(h, k=4, domain=d)
        assert [i["item_id"] for i in r.json()["items"]] == [i for i, _ in alone]
        assert [i["score"] for i in r.json()["items"]] == pytest.approx([s for _, s in alone], abs=1e-5)
    assert batches() - before < len(histories), "40 concurrent requests ran in fewer batches than requests"


LONG = ["i1"] * 21
BAD = [
    # (name, request kwargs for httpx, status, error type, field)
    ("malformed json", dict(content=b'{"domain": "shop", "history": [', headers={"content-type": "application/json"}), 400, "malformed_json", None),
    ("not an object", dict(json=["shop"]), 400, "invalid_value", None),
    ("wrong type k", dict(json={"domain": "shop", "history": ["i1"], "k": "3"}), 400, "invalid_value", "k"),
    ("wrong type history", dict(json={"domain": "shop", "history": "i1"}), 400, "invalid_value", "history"),
    ("wrong type item", dict(json={"domain": "shop", "history": [1.5]}), 400, "invalid_value", "history[0]"),
    ("missing field", dict(json={"domain": "shop"}), 400, "missing_field", "history"),
    ("unknown field", dict(json={"domain": "shop", "history": ["i1"], "kk": 3}), 400, "unknown_field", "kk"),
    ("unknown domain", dict(json={"domain": "shopp", "history": ["i1"]}), 404, "unknown_domain", "domain"),
    ("unknown items", dict(json={"domain": "shop", "history": ["i1", "nope", "zz"]}), 400, "unknown_item", "history"),
    ("empty history", dict(json={"domain": "shop", "history": []}), 400, "empty_history", "history"),
    ("k zero", dict(json={"domain": "shop", "history": ["i1"], "k": 0}), 400, "invalid_value", "k"),
    ("k negative", dict(json={"domain": "shop", "history": ["i1"], "k": -3}), 400, "invalid_value", "k"),
    ("k above the catalog", dict(json={"domain": "shop", "history": ["i1"], "k": 17}), 400, "k_out_of_range", "k"),
    ("k above the maximum", dict(json={"domain": "shop", "history": ["i1"], "k": 51}), 400, "limit_exceeded", "k"),
    ("history too long", dict(json={"domain": "shop", "history": LONG}), 400, "limit_exceeded", "history"),
    ("body too large", dict(json={"domain": "shop", "history": ["i1"] * 1000}), 413, "body_too_large", None),
    ("chunked body too large", dict(content=iter([b'{"domain": "shop", "history": [' + b'"i1", ' * 1000 + b'"i2"]}']),
                                    headers={"content-type": "application/json"}), 413, "body_too_large", None),
    ("unsupported media type", dict(content=b"domain=shop", headers={"content-type": "application/x-www-form-urlencoded"}), 415, "unsupported_media_type", None),
    ("no media type", dict(content=b'{"domain": "shop"}'), 415, "unsupported_media_type", None),
]
BAD_OTHER = [
    ("score batch too large", "POST", "/v1/score", dict(json={"domain": "shop", "histories": [["i1"]] * 9, "candidates": ["i2"]}), 400, "limit_exceeded", "histories"),
    ("score domain and domains", "POST", "/v1/score", dict(json={"domain": "shop", "domains": ["shop"], "histories": [["i1"]], "candidates": ["i2"]}), 400, "invalid_value", "domain"),
    ("score unknown candidate", "POST", "/v1/score", dict(json={"domain": "shop", "histories": [["i1"]], "candidates": ["i2", "x9"]}), 400, "unknown_item", "candidates"),
    ("score ragged candidates", "POST", "/v1/score", dict(json={"domain": "shop", "histories": [["i1"], ["i2"]], "candidates": [["i2"], ["i3", "i4"]]}), 400, "invalid_value", "candidates"),
    ("encode too many", "POST", "/v1/items/encode", dict(json={"domain": "shop", "items": [{"title": "x"}] * 9}), 400, "limit_exceeded", "items"),
    ("encode unknown domain", "POST", "/v1/items/encode", dict(json={"domain": "bnk", "items": [{"title": "x"}]}), 404, "unknown_domain", "domain"),
    ("unknown route", "GET", "/v2/recommend", {}, 404, "not_found", None),
    ("wrong method", "GET", "/v1/recommend", {}, 405, "method_not_allowed", None),
    ("admin without token", "POST", "/v1/domains", dict(json={"package": "x"}), 403, "forbidden", None),
    ("admin wrong token", "POST", "/v1/domains", dict(json={"package": "x"}, headers={"authorization": "Bearer nope-nope-nope"}), 403, "forbidden", None),
]


def check_error(r, status, kind, field):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"type", "message", "field"} and error["type"] == kind and error["field"] == field
    assert error["message"]
    return error


@pytest.mark.parametrize("name, request_kw, status, kind, field", BAD, ids=[b[0] for b in BAD])
def test_bad_recommend_requests(server, name, request_kw, status, kind, field):
    error = check_error(httpx.post(f"{server.url}/v1/recommend", timeout=60, **request_kw), status, kind, field)
    if kind == "unknown_domain":
        assert "Did you mean 'shop'?" in error["message"]
    if kind == "unknown_item":
        assert "'nope'" in error["message"] and "'zz'" in error["message"]
    assert recommend(server, k=2).status_code == 200, "the server keeps serving"


@pytest.mark.parametrize("name, method, path, request_kw, status, kind, field", BAD_OTHER, ids=[b[0] for b in BAD_OTHER])
def test_bad_other_requests(server, name, method, path, request_kw, status, kind, field):
    check_error(httpx.request(method, f"{server.url}{path}", timeout=60, **request_kw), status, kind, field)
    assert recommend(server, k=2).status_code == 200, "the server keeps serving"


def test_admin_loads_a_domain_with_its_token_only(server, packages):
    r = post(server, "/v1/domains", {"package": str(packages["later"])}, headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "later" and r.json()["methods"] == {"text": "ia3"} and r.json()["catalog_size"] == 16
    assert "later" in [d["name"] for d in httpx.get(f"{server.url}/v1/domains").json()["domains"]]
    assert post(server, "/v1/recommend", {"domain": "later", "history": ["i1"], "k": 2}).status_code == 200
    again = post(server, "/v1/domains", {"package": str(packages["later"])}, headers={"authorization": f"Bearer {TOKEN}"})
    check_error(again, 400, "bad_request", None)  # already loaded: the message says so


def test_admin_route_is_off_without_a_token(rec):
    with serving(create_app(rec, Settings())) as live:
        r = httpx.post(f"{live.url}/v1/domains", json={"package": "anything"}, headers={"authorization": "Bearer anything-at-all"})
        check_error(r, 403, "forbidden", None)
        assert "--admin-token" in r.json()["error"]["message"]


def test_domains_health_and_metrics(server, rec):
    domains = {d["name"]: d for d in httpx.get(f"{server.url}/v1/domains").json()["domains"]}
    assert domains["shop"]["methods"] == {"text": "lora"} and domains["bank"]["methods"] == {"text": "bottleneck"}
    assert domains["shop"]["index"]["items"] == 16 and domains["shop"]["catalog_size"] == 16
    assert domains["shop"]["package_id"] == rec.manifest("shop")["id"]
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json()["ready"] is True
    recommend(server, k=2)
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("crossrec_requests_total", "crossrec_request_seconds_bucket", "crossrec_batch_rows_bucket", "crossrec_queue_depth"):
        assert name in text
    assert 'crossrec_requests_total{domain="shop",endpoint="/v1/recommend",status="200"}' in text


def test_openapi_lists_every_endpoint(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {(p, m) for p, ops in schema["paths"].items() for m in ops} == {
        ("/v1/recommend", "post"), ("/v1/score", "post"), ("/v1/items/encode", "post"), ("/v1/domains", "get"),
        ("/v1/domains", "post"), ("/healthz", "get"), ("/readyz", "get"), ("/metrics", "get"),
    }
    recommend_op = schema["paths"]["/v1/recommend"]["post"]
    assert recommend_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/RecommendRequest")
    assert {"400", "404", "413", "415"} <= set(recommend_op["responses"])
    assert set(schema["components"]["schemas"]["RecommendRequest"]["properties"]) == {"domain", "history", "k", "exclude_history", "explain"}


def test_health_answers_during_a_long_batch_and_shutdown_finishes_in_flight_requests(rec):
    """A job holding the worker (a stand-in for a long batch) keeps /healthz answering; a request queued behind
    it is still answered after shutdown starts (what SIGTERM does), and the server then stops."""
    app = create_app(rec, Settings(max_wait_ms=1))
    live = LiveServer(app).start()
    release = threading.Event()
    holding = asyncio.run_coroutine_threadsafe(app.state.batcher.submit(Job("call", lambda: release.wait(30), alone=True)), app.state.loop)
    try:
        started = time.perf_counter()
        assert httpx.get(f"{live.url}/healthz", timeout=10).status_code == 200
        assert time.perf_counter() - started < 5
        results = {}
        worker = threading.Thread(target=lambda: results.update(r=recommend(live, k=3)))
        worker.start()
        time.sleep(0.5)  # the request is in flight, queued behind the held worker
        live.server.should_exit = True  # graceful shutdown starts while it waits
        time.sleep(0.5)
        assert worker.is_alive(), "the queued request is still waiting for the worker"
    finally:
        release.set()
    worker.join(timeout=60)
    live.thread.join(timeout=60)
    assert holding.result(timeout=10) is True
    assert results["r"].status_code == 200 and len(results["r"].json()["items"]) == 3
    assert not live.thread.is_alive()
