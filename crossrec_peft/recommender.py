"""`Recommender`: adapter packages of several domains on shared frozen backbones, for use from Python.

    rec = Recommender.from_pretrained("adapters/ecommerce")   # a package directory or "hf://org/name[@rev]"
    rec.load_adapter("adapters/finance")                      # its domain name comes from its manifest
    rec.set_domain("finance")
    rec.recommend(history=["f-12", "f-40"], k=10)             # [(item_id, score), ...]

Each backbone (same backbone config) is loaded once; a further domain costs only its adapter, heads and
fusion. Domains with different methods (LoRA of any rank, IA3, bottleneck adapters, frozen) share it
through `model.routing.SharedBackbone`, which also encodes batches whose rows belong to different domains
in one pass; each method says how its weights share (`Method.share`). A method that cannot share (a whole
tower trained by `full`, LoRA with trained biases) gives the reason (`Method.own_backbone_reason`), and its
domain gets its own backbone copy: `own_backbones(domain)` lists which and why.
Documented in docs/recommender.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

import torch
import torch.nn.functional as F

from .errors import ConfigError, DataError, PackageError, closest, did_you_mean, named
from .hybrid import HybridRanking
from .index import (
    Catalog, FaissSearch, Index, adapter_fingerprint, catalog_fingerprint, check_index, check_outside_package,
    default_path, exact_top_k, load_catalog, read_index, save_index,
)
from .model.routing import SharedBackbone
from .model.two_tower import TwoTowerModel

log = logging.getLogger(__name__)

# An item: its id in the domain's catalog, or its fields ({"title": ..., "category": ...}) for an item that
# is not in the catalog (a new product).
Item = Union[str, Mapping[str, Any]]


@dataclass
class _Domain:
    name: str
    directory: Path
    manifest: dict
    model: TwoTowerModel
    shared: dict[str, SharedBackbone]  # modality -> shared backbone (modalities absent here have their own tower)
    adapter_sha: str
    own: dict[str, str] = field(default_factory=dict)  # modality -> why its method keeps its own backbone
    data_dir: Path | None = None
    catalog: Catalog | None = None
    index: Index | None = None
    index_path: Path | None = None
    vectors: torch.Tensor | None = None  # item vectors (after the item head, normalised) of the index
    faiss: FaissSearch | None = field(default=None, repr=False)
    hybrid: HybridRanking | None = field(default=None, repr=False)  # the co-occurrence term the run chose, if any

    def extra_scores(self, histories: Sequence[Sequence[int]]) -> torch.Tensor | None:
        """[len(histories), catalog]: what the hybrid adds to the cosines of the index's rows (None without one),
        for histories of index rows, oldest first (below 0: an item given by its fields, `hybrid.history_rows`)."""
        if self.hybrid is None or self.index is None:
            return None
        return self.hybrid.weight * self.hybrid.on(self.index.item_ids, self.vectors).scores(histories)

    def hybrid_catalog(self) -> tuple[Sequence[str], torch.Tensor] | None:
        """The catalog items borrow from (hybrid.py `Borrowing`): its ids and item vectors, None without borrowing."""
        if self.hybrid is None or not self.hybrid.borrows or self.index is None or self.vectors is None:
            return None
        return self.index.item_ids, self.vectors

    @property
    def max_history(self) -> int:
        return int(self.manifest["model"].get("max_history", 50))

    def file_fields(self) -> list[str]:
        """Fields that hold file paths (images): their files are part of the catalog's fingerprint."""
        out: list[str] = []
        for enc in self.model.modalities.values():
            if enc.backbone.modality == "image":
                out.extend(f for f in enc.fields if f not in out)
        return out


def _resolve(path: str | Path) -> Path:
    from .hub import resolve

    return Path(resolve(path))


class Recommender:
    """Per-domain adapter packages on shared frozen backbones: swap domains, score mixed-domain batches,
    recommend from a domain's catalog."""

    def __init__(self, *, device: str | torch.device | None = None, batch_size: int = 256):
        self.device = check_device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        self._backbones: dict[str, SharedBackbone] = {}  # backbone config (JSON) -> shared backbone
        self._domains: dict[str, _Domain] = {}
        self._active: str | None = None

    # -- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, *, data: str | Path | None = None, device: str | torch.device | None = None) -> "Recommender":
        """A recommender with one domain: the package at `path` (a directory or "hf://org/name[@revision]").
        `data` is the domain's catalog directory (default: the data the package was trained on, if present)."""
        rec = cls(device=device)
        rec.load_adapter(path, data=data)
        return rec

    def load_adapter(self, path: str | Path, *, data: str | Path | None = None, name: str | None = None, hybrid: bool = True) -> str:
        """Add a domain from its package; returns its name (the manifest's domain unless `name` is given).
        Its backbones are reused when already loaded: only the adapter, fusion and heads are read. The first
        domain loaded becomes the active one. A package whose run chose a hybrid ranking (crossrec_peft/hybrid.py)
        ranks with its co-occurrence term, as the run's "hybrid" system did; `hybrid=False` ranks by the model alone."""
        from . import registry
        from .config import component
        from .model.build import build_model
        from .package import open_package

        package = open_package(_resolve(path), source=str(path))
        directory, manifest = package.directory, package.manifest
        name = str(name or manifest.get("domain") or directory.name)
        if name in self._domains:
            raise PackageError(
                f"Domain '{name}' is already loaded (from {self._domains[name].directory}); to load {path} as well, give "
                f"it another name: NAME={path} on the command line (crossrec-peft recommend ... other={path}), "
                "load_adapter(path, name='other') in Python."
            )
        model_cfg = manifest["model"]
        shared: dict[str, SharedBackbone] = {}
        own: dict[str, str] = {}  # modality -> why its method keeps its own backbone
        views: dict[str, torch.nn.Module] = {}
        for modality, mod in model_cfg["modalities"].items():
            where = f"{directory}: model.modalities.{modality}"
            m_entry, _, m_options = component(registry.methods, mod["method"], f"{where}.method")
            reason = registry.methods.create(m_entry, m_options).own_backbone_reason()
            if reason is not None:  # built and loaded with the domain, as load_package does
                own[modality] = reason
                log.info("domain '%s', modality '%s' gets its own backbone: %s.", name, modality, reason)
                continue
            entry, argument, options = component(registry.backbones, mod["backbone"], f"{where}.backbone")
            # Keyed by the resolved options (defaults filled in), so equal backbones written differently match;
            # options that only change featurization (a text backbone's max_length) do not split the backbone.
            resolved = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})
            featurize_only = getattr(options, "FEATURIZE_ONLY", ())
            weights_key = {k: v for k, v in resolved.items() if k not in featurize_only}
            key = json.dumps({"backbone": entry.name, "argument": argument, "options": weights_key}, sort_keys=True, default=str)
            backbone = self._backbones.get(key)
            if backbone is None:
                backbone = SharedBackbone(registry.backbones.create(entry, options, argument)).to(self.device)
                self._backbones[key] = backbone
            package.check_backbone(modality, backbone.identity)
            shared[modality] = backbone
            views[modality] = _featurize_view(backbone.backbone, options, featurize_only)

        model = build_model(model_cfg, attach_methods=False, backbones=views)
        for modality in own:
            package.check_backbone(modality, model.modalities[modality].backbone.identity())
            package.load_method(model, modality)
        state = package.weights()
        routed: dict[str, dict[str, torch.Tensor]] = {m: {} for m in shared}
        rest: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            modality = next((m for m in shared if key.startswith(f"modalities.{m}.backbone.")), None)
            if modality is None:
                rest[key] = value
            else:
                routed[modality][key[len(f"modalities.{modality}.backbone."):]] = value
        # The shared modalities' methods were not loaded on this model: their tensors are routed, not assigned.
        package.assign(model, rest)
        model.requires_grad_(False)
        model.eval().to(self.device)

        attached: list[SharedBackbone] = []
        try:
            for modality, backbone in shared.items():
                method = model.modalities[modality].method
                with package.loading(modality, method, backbone.identity):  # what a failed load means, as load_package says it
                    backbone.add(name, method, package.method_dir(modality), routed[modality])
                attached.append(backbone)
        except Exception:
            for backbone in attached:
                backbone.remove(name)
            raise
        for backbone in shared.values():
            backbone.to(self.device)
        chosen = package.hybrid() if hybrid else None
        self._domains[name] = _Domain(
            name, directory, manifest, model, shared, adapter_fingerprint(directory),
            data_dir=Path(data).expanduser() if data is not None else None, own=own,
            hybrid=chosen,
        )
        if self._active is None:
            self._active = name
        return name

    # -- domains ---------------------------------------------------------------------------------------------
    @property
    def domains(self) -> list[str]:
        """Loaded domains, in load order."""
        return list(self._domains)

    @property
    def domain(self) -> str | None:
        """The active domain (what calls without `domain=`/`domains=` use)."""
        return self._active

    def set_domain(self, name: str) -> None:
        """Make `name` the active domain. Nothing is loaded or moved: every domain's adapter stays attached."""
        self._active = self._get(name).name

    def own_backbones(self, domain: str | None = None) -> dict[str, str]:
        """Modality -> why its method keeps its own backbone instead of sharing one (`Method.own_backbone_reason`),
        for the domain's modalities that do; the others share their backbone with every domain on it."""
        return dict(self._get(domain).own)

    def manifest(self, domain: str | None = None) -> dict:
        """The package manifest (crossrec.json) of a domain."""
        return self._get(domain).manifest

    def push_to_hub(self, repo_id: str, *, domain: str | None = None, private: bool = False,
                    revision: str | None = None, commit_message: str | None = None) -> str:
        """Upload a domain's package (the active one by default) to the Hub model repo `repo_id`, exactly as
        `crossrec-peft push` does (verified first; token from huggingface_hub's usual lookup). Returns the
        commit URL. See docs/hub.md."""
        from .hub import push

        return push(self._get(domain).directory, repo_id, private=private, revision=revision, commit_message=commit_message)

    def _get(self, domain: str | None) -> _Domain:
        name = domain if domain is not None else self._active
        if name is None:
            raise ConfigError("No domain loaded: call load_adapter(path) first.")
        if name not in self._domains:
            raise ConfigError(_unknown_domain(name, list(self._domains)))
        return self._domains[name]

    def _row_domains(self, domains: Sequence[str] | None, count: int) -> list[_Domain]:
        if domains is None:
            return [self._get(None)] * count
        if isinstance(domains, str):
            return [self._get(domains)] * count
        if len(domains) != count:
            raise ConfigError(f"domains has {len(domains)} entries for {count} rows: give one domain per row.")
        return [self._get(d) for d in domains]

    # -- catalogs --------------------------------------------------------------------------------------------
    def set_catalog(self, data: str | Path, domain: str | None = None) -> None:
        """Use the items table in `data` (a standard-layout directory) as the domain's catalog."""
        d = self._get(domain)
        d.data_dir, d.catalog, d.index, d.vectors, d.faiss = Path(data).expanduser(), None, None, None, None

    def _catalog(self, d: _Domain) -> Catalog:
        if d.catalog is None:
            directory = d.data_dir
            if directory is None:
                source = (d.manifest.get("data") or {}).get("source")
                if source and Path(source).is_dir():
                    directory = Path(source)
                elif source:
                    directory = _demo_catalog(str(source))
            if directory is None:
                recorded = (d.manifest.get("data") or {}).get("source")
                hint = f" (it was trained on {recorded}, which is not here)" if recorded else ""
                raise DataError(
                    f"Domain '{d.name}' has no item catalog{hint}: pass the catalog directory (data=DIR in Python, "
                    "--data DIR on the command line), or use an index built by crossrec-peft index."
                )
            d.catalog = load_catalog(directory)
        return d.catalog

    def use_index(self, path: str | Path, domain: str | None = None) -> None:
        """Recommend from an index file built by `build_index` / `crossrec-peft index` (checked to be built
        with this domain's adapter; the catalog it was built from is not needed)."""
        d = self._get(domain)
        path = Path(path)
        index = read_index(path)
        check_index(index, path, domain=d.name, adapter_sha=d.adapter_sha)
        self._set_index(d, index, path)

    def _set_index(self, d: _Domain, index: Index, path: Path | None) -> None:
        d.index, d.index_path, d.faiss = index, path, None
        with torch.no_grad():
            content = index.content.to(self.device)
            d.vectors = torch.cat([d.model.item_vectors(content[s : s + 65536]).float() for s in range(0, len(content), 65536)])

    def build_index(self, domain: str | None = None, *, out: str | Path | None = None, cache_dir: str | Path | None = None,
                    rebuild: bool = False, progress: bool = False) -> Path:
        """Encode the domain's whole catalog with its adapter and save the index (default: in the cache,
        named by the adapter's and the catalog's hashes, so it is reused until either changes). Returns its path."""
        d = self._get(domain)
        catalog = self._catalog(d)
        catalog_sha = catalog_fingerprint(catalog, d.file_fields())
        if out:
            check_outside_package(Path(out), "out")
        path = Path(out) if out else default_path(d.name, d.adapter_sha, catalog_sha, cache_dir)
        if path.is_file() and not rebuild:
            index = read_index(path)
            try:
                check_index(index, path, domain=d.name, adapter_sha=d.adapter_sha, catalog_sha=catalog_sha)
                self._set_index(d, index, path)
                return path
            except (PackageError, DataError):
                pass  # an index of another adapter or catalog at an explicit path: rebuilt below
        rows = list(range(len(catalog.item_ids)))
        chunks = []
        from tqdm.auto import tqdm

        for start in tqdm(range(0, len(rows), self.batch_size), desc=f"{d.name}: encode catalog", disable=not progress, leave=False):
            chunks.append(self._content([(d, r) for r in rows[start : start + self.batch_size]]))
        content = torch.cat(chunks) if chunks else torch.zeros(0, d.model.dim)
        index = Index(catalog.item_ids, content.float().cpu(), {
            "domain": d.name, "adapter_sha256": d.adapter_sha, "catalog_sha256": catalog_sha,
            "catalog": str(catalog.directory),
        })
        save_index(path, index)
        self._set_index(d, index, path)
        return path

    def index_info(self, domain: str | None = None) -> dict[str, Any]:
        """Size, path and hashes of the domain's index (built on demand)."""
        d = self._get(domain)
        self._ensure_index(d)
        assert d.index is not None
        return {"items": len(d.index.item_ids), "dim": int(d.index.content.shape[1]), "path": str(d.index_path), **d.index.meta}

    @torch.no_grad()
    def evaluate_faiss(self, *, k: int = 10, queries: int = 200, domain: str | None = None, seed: int = 0) -> dict[str, Any]:
        """FAISS against exact search on the domain's index: recall@k and per-query latency (p50) over users
        made of `max_history` random catalog items each."""
        import time

        import numpy as np

        from .index import recall_against_exact

        d = self._get(domain)
        self._ensure_index(d)
        assert d.index is not None and d.vectors is not None
        if d.faiss is None:
            d.faiss = FaissSearch(d.vectors)
        generator = torch.Generator().manual_seed(seed)
        n = len(d.index.item_ids)
        rows = torch.randint(0, n, (queries, min(d.max_history, n)), generator=generator)
        content = d.index.content[rows].to(self.device)
        users = d.model.user_vectors(content, torch.ones(rows.shape, dtype=torch.bool, device=self.device)).float()
        timings: dict[str, list[float]] = {"exact": [], "faiss": []}
        for user in users:
            for name, fn in (("exact", lambda u: exact_top_k(d.vectors, u, k)), ("faiss", lambda u: d.faiss.search(u, k))):
                started = time.perf_counter()
                fn(user)
                timings[name].append(1000 * (time.perf_counter() - started))
        return {
            "recall": recall_against_exact(d.vectors, d.faiss, users, k), "queries": queries, "k": k,
            "nlist": d.faiss.nlist, "nprobe": d.faiss.nprobe,
            "exact_ms_p50": float(np.median(timings["exact"])), "faiss_ms_p50": float(np.median(timings["faiss"])),
        }

    def _ensure_index(self, d: _Domain) -> None:
        if d.index is None:
            self.build_index(d.name, progress=sys.stderr.isatty())

    # -- encoding --------------------------------------------------------------------------------------------
    def _rows_of(self, d: _Domain, items: Sequence[Item], what: str) -> list[int | Mapping[str, Any]]:
        ids = [i for i in items if not isinstance(i, Mapping)]
        if not ids:
            return list(items)
        rows = iter(self._catalog(d).lookup(ids, f"{what} for domain '{d.name}'"))
        return [i if isinstance(i, Mapping) else next(rows) for i in items]

    @torch.no_grad()
    def _content(self, pairs: Sequence[tuple[_Domain, int | Mapping[str, Any]]]) -> torch.Tensor:
        """Content vectors of (domain, catalog row or item fields) pairs, in order: every shared backbone runs
        once over all pairs that use it, each row with its own domain's adapter. Needs equal content sizes
        across the domains present (callers group by domain when sizes differ)."""
        from .backbones.base import FeatureContext

        by_domain: dict[str, list[int]] = {}
        for pos, (d, _) in enumerate(pairs):
            by_domain.setdefault(d.name, []).append(pos)
        # Per domain and modality: the model inputs of that domain's items.
        jobs: list[tuple[_Domain, str, dict[str, torch.Tensor]]] = []
        for name, positions in by_domain.items():
            d = self._domains[name]
            items = [pairs[p][1] for p in positions]
            fields: list[str] = []
            for enc in d.model.modalities.values():
                fields.extend(f for f in enc.fields if f not in fields)
            rows = [i for i in items if not isinstance(i, Mapping)]
            looked_up = self._catalog(d).columns(fields, rows) if rows else {f: [] for f in fields}
            columns: dict[str, list] = {f: [] for f in fields}
            ids: list[str] = []
            taken = 0
            for k, item in enumerate(items):
                for f in fields:
                    columns[f].append(item.get(f) if isinstance(item, Mapping) else looked_up[f][taken])
                if isinstance(item, Mapping):
                    ids.append(str(item.get("item_id", f"item {k + 1} of the request")))
                else:
                    ids.append(d.catalog.item_ids[item])
                    taken += 1
            catalog = d.catalog
            recorded = ((d.manifest.get("config") or {}).get("data") or {})

            def where(k: int, items=items, catalog=catalog) -> str:  # the file and line of a catalog item
                item = items[k]
                return catalog.where(item) if catalog is not None and not isinstance(item, Mapping) else f"item {k + 1} of the request"

            context = FeatureContext(
                item_ids=ids, root=catalog.directory if catalog else None, where=where,
                allow_outside=bool(recorded.get("allow_outside_images", False)),
                bad_image_hint="Fix or replace those images in the catalog directory (every catalog image is encoded).",
                # New items given by their fields may come without an image: that modality is then missing
                # (the fusion's missing-modality path), as in training. Catalog images stay strict.
                on_bad_image="placeholder" if all(isinstance(i, Mapping) for i in items) else "error",
            )
            index = torch.arange(len(items))
            for modality, enc in d.model.modalities.items():
                features = enc.featurize(columns, context)
                inputs = {k: v.to(self.device) for k, v in enc.collate(features, index).items()}
                jobs.append((d, modality, inputs))
        # One pass per backbone over every domain's rows.
        outputs: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        groups: dict[int, list[tuple[_Domain, str, dict[str, torch.Tensor]]]] = {}
        for job in jobs:
            d, modality, _ = job
            backbone = d.shared.get(modality)
            groups.setdefault(id(backbone) if backbone is not None else id(job), []).append(job)
        for group in groups.values():
            d0, m0, _ = group[0]
            backbone = d0.shared.get(m0)
            if backbone is None:  # a domain's own tower
                outputs[(d0.name, m0)] = d0.model.modalities[m0](group[0][2])
                continue
            inputs = _concat([g[2] for g in group])
            domains = [g[0].name for g in group for _ in range(len(next(iter(g[2].values()))))]
            emb, present = backbone(inputs, domains)
            start = 0
            for d, modality, part in group:
                n = len(next(iter(part.values())))
                outputs[(d.name, modality)] = (emb[start : start + n], present[start : start + n])
                start += n
        dims = {self._domains[n].model.dim for n in by_domain}
        if len(dims) > 1:
            raise ConfigError(f"Domains {', '.join(by_domain)} have different content sizes ({sorted(dims)}); encode them separately.")
        out = torch.empty(len(pairs), dims.pop(), device=self.device)
        for name, positions in by_domain.items():
            d = self._domains[name]
            embeddings = {m: outputs[(name, m)][0] for m in d.model.modalities}
            present = {m: outputs[(name, m)][1] for m in d.model.modalities}
            out[torch.as_tensor(positions, device=self.device)] = d.model.fusion(embeddings, present).float()
        return out

    def _content_chunked(self, pairs: Sequence[tuple[_Domain, int | Mapping[str, Any]]]) -> list[torch.Tensor]:
        """Content vector per pair, encoding `batch_size` pairs per pass (grouped by content size)."""
        out: list[torch.Tensor | None] = [None] * len(pairs)
        by_dim: dict[int, list[int]] = {}
        for pos, (d, _) in enumerate(pairs):
            by_dim.setdefault(d.model.dim, []).append(pos)
        for positions in by_dim.values():
            for start in range(0, len(positions), self.batch_size):
                chunk = positions[start : start + self.batch_size]
                vectors = self._content([pairs[p] for p in chunk])
                for p, v in zip(chunk, vectors):
                    out[p] = v
        return out  # type: ignore[return-value]

    def _history_pairs(self, d: _Domain, history: Sequence[Item]) -> list[tuple[_Domain, int | Mapping[str, Any]]]:
        if not history:
            raise DataError(f"An empty history for domain '{d.name}': give at least one item.")
        return [(d, r) for r in self._rows_of(d, list(history)[-d.max_history :], "item ids in the history")]

    def _users(self, rows: list[_Domain], contents: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """User vectors, each row's history content through its own domain's user tower."""
        out: list[torch.Tensor | None] = [None] * len(rows)
        by_domain: dict[str, list[int]] = {}
        for i, d in enumerate(rows):
            by_domain.setdefault(d.name, []).append(i)
        for name, idx in by_domain.items():
            d = self._domains[name]
            width = max(len(contents[i]) for i in idx)
            history = torch.zeros(len(idx), width, d.model.dim, device=self.device)
            mask = torch.zeros(len(idx), width, dtype=torch.bool, device=self.device)
            for j, i in enumerate(idx):
                history[j, : len(contents[i])] = torch.stack(contents[i])
                mask[j, : len(contents[i])] = True
            users = d.model.user_vectors(history, mask).float()
            for j, i in enumerate(idx):
                out[i] = users[j]
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def encode_items(self, items: Sequence[Item], *, domains: Sequence[str] | str | None = None) -> torch.Tensor:
        """Item vectors [N, dim] (L2-normalised, after the item head): ids from the catalog or field dicts.
        `domains`: one per item (mixed batches share each backbone pass), one for all, or the active domain."""
        row_domains = self._row_domains(domains, len(items))
        pairs = []
        for d, item in zip(row_domains, items):
            pairs.append((d, self._rows_of(d, [item], "item ids")[0]))
        contents = self._content_chunked(pairs)
        out = [self._domains[d.name].model.item_vectors(c.unsqueeze(0)).float()[0] for d, c in zip(row_domains, contents)]
        return _stack(out, row_domains)

    @torch.no_grad()
    def encode_users(self, histories: Sequence[Sequence[Item]], *, domains: Sequence[str] | str | None = None) -> torch.Tensor:
        """User vectors [B, dim] (L2-normalised, after the user head) from item histories, oldest first; the
        most recent `max_history` items of each count."""
        row_domains = self._row_domains(domains, len(histories))
        pairs, spans = [], []
        for d, history in zip(row_domains, histories):
            hp = self._history_pairs(d, history)
            spans.append((len(pairs), len(hp)))
            pairs.extend(hp)
        contents = self._content_chunked(pairs)
        users = self._users(row_domains, [contents[s : s + n] for s, n in spans])
        return _stack(users, row_domains)

    @torch.no_grad()
    def score(self, histories: Sequence[Sequence[Item]], candidates: Sequence[Item] | Sequence[Sequence[Item]], *,
              domains: Sequence[str] | str | None = None) -> torch.Tensor:
        """Scores [B, C]: cosine similarity between each row's user (from its history) and each of its
        candidates, row i in domain `domains[i]`, plus the co-occurrence term where the domain ranks as a hybrid
        (the scores `recommend` ranks by). `candidates` is one list for every row or one list per row (all of the
        same length). Items of all rows are encoded together: one pass per shared backbone."""
        rows = len(histories)
        row_domains = self._row_domains(domains, rows)
        if candidates and (isinstance(candidates[0], (str, Mapping))):
            candidates = [candidates] * rows  # type: ignore[list-item]
        if len(candidates) != rows:
            raise ConfigError(f"{len(candidates)} candidate lists for {rows} histories: give one list, or one per history.")
        width = {len(c) for c in candidates}
        if len(width) > 1:
            raise ConfigError(f"candidate lists of different lengths ({sorted(width)}): pad or split them.")
        pairs, spans = [], []
        for d, history, cands in zip(row_domains, histories, candidates):
            hp = self._history_pairs(d, history)
            cp = [(d, r) for r in self._rows_of(d, list(cands), "candidate item ids")]
            spans.append((len(pairs), len(hp), len(cp)))
            pairs.extend(hp + cp)
        contents = self._content_chunked(pairs)
        users = self._users(row_domains, [contents[s : s + h] for s, h, _ in spans])
        out = torch.empty(rows, width.pop() if width else 0)
        for i, (d, (s, h, c)) in enumerate(zip(row_domains, spans)):
            items = d.model.item_vectors(torch.stack(contents[s + h : s + h + c])).float() if c else torch.zeros(0, 1, device=self.device)
            out[i] = (items @ users[i]).cpu() if c else out[i]
        for i, (d, history, cands) in enumerate(zip(row_domains, histories, candidates)):
            if d.hybrid is not None and len(cands):
                if d.hybrid.borrows and any(not isinstance(c, Mapping) for c in cands):
                    self._ensure_index(d)  # catalog candidates borrow by the catalog's item vectors
                out[i] += d.hybrid.by_ids(history, ["" if isinstance(c, Mapping) else str(c) for c in cands],
                                          d.hybrid_catalog())
        return out

    # -- recommending ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def recommend(self, history: Sequence[str], k: int = 10, *, domain: str | None = None, exclude_history: bool = True,
                  search: str = "exact") -> list[tuple[str, float]]:
        """The `k` best items of the domain's catalog for a user with this history (item ids, oldest first),
        as (item_id, score), best first: the cosine, plus the co-occurrence term where the domain ranks as a
        hybrid. Items of the history are left out unless `exclude_history`
        is False. `search`: "exact" (matrix product) or "faiss" (approximate; the optional extra). The
        catalog's index is built (and cached) on first use when none was given."""
        if search not in ("exact", "faiss"):
            raise ConfigError(f"search must be 'exact' or 'faiss', got '{search}'.")
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}.")
        d = self._get(domain)
        if d.index is None:
            # Before the catalog is encoded (minutes for a real catalog on a CPU): a mistyped id fails at once.
            _check_history(d, history, self._catalog(d).rows)
        self._ensure_index(d)
        assert d.index is not None and d.vectors is not None
        if k > len(d.index.item_ids):  # refused as the server refuses it (k_out_of_range), not silently cut
            raise ConfigError(f"k must be at most {len(d.index.item_ids)} (the catalog size of domain '{d.name}'), got {k}.")
        rows = _lookup_index(d, history)
        recent = rows[-d.max_history :]
        content = d.index.content[recent].to(self.device)
        user = d.model.user_vectors(content.unsqueeze(0), torch.ones(1, len(recent), dtype=torch.bool, device=self.device)).float()[0]
        exclude = sorted(set(rows)) if exclude_history else []
        extra = d.extra_scores([rows])
        if search == "faiss":
            if d.faiss is None:
                d.faiss = FaissSearch(d.vectors)
            top, scores = d.faiss.search(user, k, exclude)
            if extra is not None:  # the term lifts only the items it is nonzero for: rank those with FAISS's top k
                candidates = torch.cat([top, extra[0].nonzero().view(-1)]).unique()
                candidates = candidates[~torch.isin(candidates, torch.as_tensor(exclude, dtype=torch.long))]
                best = torch.topk(d.vectors[candidates].cpu() @ user.cpu() + extra[0][candidates], min(k, len(candidates)))
                top, scores = candidates[best.indices], best.values
        else:
            top, scores = exact_top_k(d.vectors, user, k, exclude, extra=None if extra is None else extra[0].to(d.vectors.device))
        return [(d.index.item_ids[int(r)], float(s)) for r, s in zip(top.tolist(), scores.tolist())]

    # -- many queries at once, explanations (crossrec_peft/batched.py, crossrec_peft/explain.py) ----------------
    def recommend_many(self, queries: Sequence[Any]) -> list[list[tuple[str, float]]]:
        """`recommend` for many queries at once, whatever their domains: each a `batched.Query` or a mapping
        with its fields (history, k, domain, exclude_history). History items may be catalog ids or field
        dicts (new items). Every query is checked first; then every user is encoded and every catalog ranked
        in a few tensor operations per domain (exact search)."""
        from .batched import Query, compute, prepare

        batch = [prepare(self, q if isinstance(q, Query) else Query(**q)) for q in queries]
        return compute(self, batch)

    def explain(self, history: Sequence[Item], item_id: str | Sequence[str], domain: str | None = None) -> Any:
        """Why `item_id` scores as it does for this history: each history item's contribution and share of
        the score (exact for pooling user encoders, leave-one-out otherwise; `method` says which) and each
        modality's (the score lost when it is masked). A list of ids gives a list. See crossrec_peft/explain.py."""
        from .explain import explain

        return explain(self, history, item_id, domain)


def check_device(device: str | torch.device, what: str = "device") -> torch.device:
    """`device` as a torch.device, or a ConfigError naming `what` (the option the user set) when torch does not
    know it or this machine does not have it (torch would fail later, moving the first backbone)."""
    try:
        out = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{what} {device!r}: not a device; give cpu, cuda, cuda:N or mps.") from None
    if out.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{what} {device!r}: no CUDA GPU is available on this machine; use cpu.")
        if out.index is not None and out.index >= count:
            raise ConfigError(f"{what} {device!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}.")
    elif out.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{what} {device!r}: MPS (Apple GPU) is not available on this machine; use cpu.")
    elif out.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"{what} {device!r}: crossrec-peft runs on cpu, cuda, cuda:N or mps.")
    return out


def _unknown_domain(name: str, loaded: list[str]) -> str:
    """Unknown domain: the closest loaded one, else a known domain of that name whose adapter is not loaded."""
    hint = did_you_mean(name, loaded)
    if not hint:
        from . import registry

        known = closest(name, [n for n in registry.domains.names() if n not in loaded])
        if known:
            hint = f" Did you mean '{known}'? No adapter of that domain is loaded: give its package too."
    return f"Unknown domain '{name}'.{hint} Loaded: {', '.join(loaded) or 'none'}."


def _featurize_view(backbone: torch.nn.Module, options: Any, featurize_only: Sequence[str]) -> torch.nn.Module:
    """The shared backbone as this domain sees it: the same modules (weights, adapters, hooks), with this
    domain's featurize-only options (its max_length) when they differ from the loaded backbone's. A shallow
    copy shares the module registry, so nothing is loaded or duplicated."""
    import copy

    current = getattr(backbone, "options", None)
    if not featurize_only or current is None or all(getattr(current, k) == getattr(options, k) for k in featurize_only):
        return backbone
    view = copy.copy(backbone)
    view.options = dataclasses.replace(current, **{k: getattr(options, k) for k in featurize_only})
    return view


def _demo_catalog(source: str) -> Path | None:
    """A demo catalog named like the one a package was trained on (`<domain>-v<generator>-i<items>-u<users>-s<seed>`,
    see data.domains.demo_directory), regenerated into this machine's cache; None when `source` is not one or
    the generator has changed since (its catalog would differ)."""
    from omegaconf import OmegaConf

    from .data.domains import get_domain, parse_demo_directory
    from .data.source import ensure_demo

    demo = parse_demo_directory(source)
    if demo is None:
        return None
    try:
        domain = get_domain(demo["domain"])
    except ConfigError:
        return None
    if domain.generator_version != demo["version"]:
        return None
    cfg = OmegaConf.create({"domain": demo["domain"], "seed": demo["seed"],
                            "data": {"cache_dir": None, "num_items": demo["num_items"], "num_users": demo["num_users"]}})
    return ensure_demo(cfg)


def _check_history(d: _Domain, history: Sequence[str], known: Mapping[str, int]) -> None:
    """DataError for an empty history or ids not among `known` (catalog id -> row), each named."""
    if not history:
        raise DataError(f"An empty history for domain '{d.name}': give at least one item id.")
    unknown = [str(h) for h in history if str(h) not in known]
    if unknown:
        # The catalog directory (--data) the index was built from: where the user looks for the ids.
        meta = (d.index.meta or {}) if d.index is not None else {}
        where = (d.catalog.directory if d.catalog is not None else None) or d.data_dir or meta.get("catalog") or d.index_path or "its index"
        raise DataError(f"Unknown item ids in the history for domain '{d.name}': {named(unknown)} (not in the catalog at {where}).")


def _lookup_index(d: _Domain, history: Sequence[str]) -> list[int]:
    positions = getattr(d.index, "_rows", None)
    if positions is None:
        positions = {i: r for r, i in enumerate(d.index.item_ids)}
        d.index._rows = positions  # type: ignore[attr-defined]
    _check_history(d, history, positions)
    return [positions[str(h)] for h in history]


def _concat(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Inputs of several domains as one batch; token tensors of different widths are padded on the right
    (attention masks pad with zeros, so padding never changes what the backbone computes for a row)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if tensors[0].dim() >= 2 and len({t.shape[1] for t in tensors}) > 1:
            width = max(t.shape[1] for t in tensors)
            tensors = [F.pad(t, (0, 0) * (t.dim() - 2) + (0, width - t.shape[1])) for t in tensors]
        out[key] = torch.cat(tensors)
    return out


def _stack(vectors: list[torch.Tensor], row_domains: list[_Domain]) -> torch.Tensor:
    if not vectors:
        return torch.zeros(0, row_domains[0].model.dim if row_domains else 0)
    sizes = {v.shape[-1] for v in vectors}
    if len(sizes) > 1:
        names = ", ".join(dict.fromkeys(d.name for d in row_domains))
        raise ConfigError(f"Domains {names} have vectors of different sizes ({sorted(sizes)}): encode each domain separately.")
    return torch.stack(vectors).cpu()
