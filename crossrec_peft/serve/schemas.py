"""Request and response bodies of the /v1 API. FastAPI validates requests against them and publishes them in
the OpenAPI schema (GET /openapi.json); see docs/serving.md."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

# An item: its id in the domain's catalog, or its fields ({"title": ..., "image": ...}) for a new item.
Item = Union[StrictStr, StrictInt, Dict[str, Any]]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelled key is an error, not silently ignored


class RecommendRequest(_Body):
    domain: StrictStr
    history: List[Item] = Field(description="the user's items, oldest first: catalog ids or field dicts")
    k: StrictInt = Field(10, ge=1, description="how many items (at most the catalog size and the server's max-k)")
    exclude_history: StrictBool = True
    explain: StrictBool = False


class HistoryTerm(BaseModel):
    item_id: str
    contribution: float
    share: Optional[float]


class ModalityTerm(BaseModel):
    modality: str
    contribution: float
    share: Optional[float]


class SimilarItem(BaseModel):
    item_id: str
    similarity: float


class BorrowedFrom(BaseModel):
    item_id: str
    share: float


class CooccurrenceTerm(BaseModel):
    weight: float
    contribution: float = Field(description="weight x the item's mean co-occurrence similarity to the history's items")
    history: List[SimilarItem] = Field(description="history items that co-occur with the item, most similar first")
    borrowed_from: Optional[List[BorrowedFrom]] = Field(
        None, description="an item no neighbour list holds: the nearest items whose term it borrows, with their shares")
    borrow_weight: Optional[float] = Field(None, description="what the borrowed term is multiplied by")


class Explanation(BaseModel):
    method: str = Field(description="exact (pooling split) or leave_one_out")
    history: List[HistoryTerm]
    modality_method: str
    modalities: List[ModalityTerm]
    model_score: Optional[float] = Field(None, description="a hybrid domain's cosine, which history and modalities explain")
    cooccurrence: Optional[CooccurrenceTerm] = Field(None, description="a hybrid domain's co-occurrence term (score = model_score + contribution)")


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    explanation: Optional[Explanation] = None


class RecommendResponse(BaseModel):
    domain: str
    items: List[RecommendedItem]


class ScoreRequest(_Body):
    domain: Optional[StrictStr] = Field(None, description="one domain for every row (or give domains)")
    domains: Optional[List[StrictStr]] = Field(None, description="one domain per history")
    histories: List[List[Item]]
    candidates: Union[List[Item], List[List[Item]]] = Field(description="one list for every history, or one list per history")


class ScoreResponse(BaseModel):
    scores: List[List[float]]


class EncodeRequest(_Body):
    domain: StrictStr
    items: List[Item] = Field(description="field dicts of new items (catalog ids also work)")


class EncodeResponse(BaseModel):
    domain: str
    dim: int
    vectors: List[List[float]]


class IndexInfo(BaseModel):
    items: int
    dim: int
    path: Optional[str]


class DomainInfo(BaseModel):
    name: str
    package: str
    package_id: Optional[str] = Field(description="the manifest's id: <domain>/<name>@<hash of its files>")
    backbones: Dict[str, str]
    methods: Dict[str, str]
    user_encoder: str
    catalog_size: Optional[int]
    index: Optional[IndexInfo]


class DomainsResponse(BaseModel):
    domains: List[DomainInfo]


class LoadDomainRequest(_Body):
    package: StrictStr = Field(description="a package directory on the server or hf://org/name[@revision]")
    data: Optional[StrictStr] = Field(None, description="the domain's catalog directory on the server")
    name: Optional[StrictStr] = None


class ErrorDetail(BaseModel):
    type: str
    message: str
    field: Optional[str]


class ErrorResponse(BaseModel):
    error: ErrorDetail
