"""Response bodies of the API (pydantic): they are the OpenAPI schema at /docs and /openapi.json."""

from typing import Literal

from pydantic import BaseModel, Field


class RecommendedItem(BaseModel):
    rank: int = Field(description="1-based position in this answer, best first.", ge=1)
    itemid: int = Field(description="RetailRocket item id.")
    score: float = Field(
        description="The model's score (source `model`), or the fallback list's score (source `popular`: "
        "distinct visitors in the last 30 days, or the trend ratio for items taken from `trending`)."
    )


class RecommendationsResponse(BaseModel):
    user_id: int = Field(description="The visitor id asked for.")
    source: Literal["model", "popular"] = Field(
        description="`model`: the promoted model's list for this visitor (never an item they bought). "
        "`popular`: the visitor is unknown or cold, so the popular list answered, topped up from the "
        "trending list when it is shorter than k."
    )
    model_version: int = Field(description="model_registry.version of the model whose rows answered.")
    items: list[RecommendedItem] = Field(description="At most k items; fewer if the lists run out.")


class SimilarItem(BaseModel):
    rank: int = Field(description="1-based position, most similar first.", ge=1)
    itemid: int = Field(description="The similar item's id.")
    score: float = Field(description="Cosine similarity of the two items' LightFM embeddings.")


class SimilarItemsResponse(BaseModel):
    item_id: int = Field(description="The item id asked for.")
    model_version: int = Field(description="model_registry.version of the model whose rows answered.")
    items: list[SimilarItem] = Field(description="At most k items, never the item itself.")


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"] = Field(
        description="`ok` (HTTP 200) when PostgreSQL answers and a promoted model's serving rows are "
        "loaded; otherwise `unavailable` (HTTP 503) and `detail` says why."
    )
    postgres: Literal["ok", "unreachable"] = Field(description="Whether PostgreSQL answered.")
    model_version: int | None = Field(description="The model version being served (null when none can be).")
    promoted_version: int | None = Field(
        description="The version model_registry marks as promoted. It differs from model_version only "
        "while a newly promoted model's serving rows are still being written; the previous model answers "
        "until they are in."
    )
    detail: str = Field(description="A human-readable summary, with what to do next when unavailable.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong and what to do next.")


class ParameterError(BaseModel):
    loc: list[str | int] = Field(description='Where the bad value is, e.g. ["query", "k"].')
    msg: str = Field(description="What is wrong with it.")
    type: str = Field(description="pydantic's error type.")
    input: object | None = Field(default=None, description="The value received.")


class ValidationErrorResponse(BaseModel):
    message: str = Field(description="One line per bad parameter: name, location, problem, value received.")
    detail: list[ParameterError] = Field(description="The same errors, structured (FastAPI's shape).")
