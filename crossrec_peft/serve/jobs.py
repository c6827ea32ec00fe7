"""What the worker thread does with a micro-batch: every job is checked on its own (so a bad request gets its
own error), then the good ones of each kind run together on the Recommender:

    recommend  all queries of every domain in one `batched.compute` (users encoded and catalogs ranked per
               domain in a few tensor operations; new items in histories through one backbone pass), then
               the explanations asked for
    score      rows of every request and domain with the same number of candidates in one `Recommender.score`
               (one pass per shared backbone)
    encode     items of every request and domain in one `Recommender.encode_items`
    call       anything else (warm-up, loading a domain), alone

Should a merged call fail anyway, its jobs are rerun one by one, so one request's problem stays its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..batched import Query, QueryError, check_fields, compute, index_rows, prepare, resolve_domain
from ..errors import named
from ..explain import explain_items
from .batcher import Job

if TYPE_CHECKING:
    from ..recommender import Recommender


@dataclass
class Recommend:
    query: Query
    explain: bool = False


@dataclass
class Score:
    histories: list[list[Any]]
    candidates: list[list[Any]]  # one list per history
    domains: list[str]


@dataclass
class Encode:
    domain: str
    items: list[Any]


def check_items(rec: "Recommender", domain: str, items: Sequence[Any], field: str) -> None:
    """Catalog ids of `items` must be in the domain's index (QueryError naming each unknown one); items given by
    their fields must have fields the model can read (`batched.check_fields`, naming e.g. items[0].title)."""
    d = resolve_domain(rec, domain)
    for position, item in enumerate(items):
        if isinstance(item, Mapping):
            check_fields(d, item, f"{field}[{position}]")
    rec._ensure_index(d)
    rows = index_rows(d)
    unknown = [str(i) for i in items if not isinstance(i, Mapping) and str(i) not in rows]
    if unknown:
        raise QueryError(f"Unknown item ids in {field} for domain '{d.name}': {named(unknown)}.", field=field, kind="unknown_item")


class Runner:
    def __init__(self, rec: "Recommender"):
        self.rec = rec

    def __call__(self, jobs: list[Job]) -> None:
        for kind, fn in (("recommend", self._recommend), ("score", self._score), ("encode", self._encode), ("call", self._call)):
            mine = [j for j in jobs if j.kind == kind]
            if mine:
                fn(mine)

    # -- helpers ---------------------------------------------------------------------------------------------
    @staticmethod
    def _guard(job: Job, fn: Callable[[], Any]) -> bool:
        try:
            job.result = fn()
            return True
        except Exception as exc:  # noqa: BLE001  (CrossrecError -> 4xx; anything else -> 500 in the handler)
            job.error = exc
            return False

    def _merged(self, jobs: list[Job], together: Callable[[], None], alone: Callable[[Job], Any]) -> None:
        try:
            together()
        except Exception:  # noqa: BLE001
            for job in jobs:
                job.error = None
                self._guard(job, lambda job=job: alone(job))

    # -- kinds -----------------------------------------------------------------------------------------------
    def _recommend(self, jobs: list[Job]) -> None:
        rec = self.rec
        ok = [j for j in jobs if self._guard(j, lambda j=j: prepare(rec, j.payload.query))]
        prepared = {id(j): j.result for j in ok}

        def together() -> None:
            for job, items in zip(ok, compute(rec, [prepared[id(j)] for j in ok])):
                job.result = items

        self._merged(ok, together, lambda j: compute(rec, [prepare(rec, j.payload.query)])[0])
        for job in ok:
            if job.error is None and job.payload.explain and job.result:
                query = job.payload.query
                items = job.result
                self._guard(job, lambda: [
                    (item, score, why) for (item, score), why in
                    zip(items, explain_items(rec, query.history, [i for i, _ in items], domain=query.domain))
                ])

    def _score(self, jobs: list[Job]) -> None:
        rec = self.rec

        def check(job: Job) -> None:
            s: Score = job.payload
            for r, (domain, history, cands) in enumerate(zip(s.domains, s.histories, s.candidates)):
                if not history:
                    raise QueryError(f"histories[{r}] is empty: give at least one item.", field=f"histories[{r}]", kind="empty_history")
                check_items(rec, domain, history, f"histories[{r}]")
                check_items(rec, domain, cands, f"candidates[{r}]" if len(s.candidates) > 1 else "candidates")

        ok = [j for j in jobs if self._guard(j, lambda j=j: check(j))]
        by_width: dict[int, list[Job]] = {}
        for job in ok:
            by_width.setdefault(len(job.payload.candidates[0]), []).append(job)
        for group in by_width.values():
            def together(group=group) -> None:
                rows = [(d, h, c) for j in group for d, h, c in zip(j.payload.domains, j.payload.histories, j.payload.candidates)]
                scores = rec.score([h for _, h, _ in rows], [c for _, _, c in rows], domains=[d for d, _, _ in rows]).tolist()
                start = 0
                for job in group:
                    n = len(job.payload.histories)
                    job.result = scores[start : start + n]
                    start += n

            self._merged(group, together, lambda j: rec.score(j.payload.histories, j.payload.candidates, domains=j.payload.domains).tolist())

    def _encode(self, jobs: list[Job]) -> None:
        rec = self.rec
        ok = [j for j in jobs if self._guard(j, lambda j=j: check_items(rec, j.payload.domain, j.payload.items, "items"))]
        if not ok:
            return

        def together() -> None:
            items = [i for j in ok for i in j.payload.items]
            domains = [j.payload.domain for j in ok for _ in j.payload.items]
            vectors = rec.encode_items(items, domains=domains).tolist()
            start = 0
            for job in ok:
                job.result = vectors[start : start + len(job.payload.items)]
                start += len(job.payload.items)

        self._merged(ok, together, lambda j: rec.encode_items(j.payload.items, domains=j.payload.domain).tolist())

    def _call(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._guard(job, job.payload)
