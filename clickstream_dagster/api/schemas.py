"""Response bodies of the API (pydantic): they are the OpenAPI schema at /docs and /openapi.json."""

from typing import Literal

from pydantic import BaseModel, Field

from clickstream_dagster.api.session import Source


class RecommendedItem(BaseModel):
    rank: int = Field(description="1-based position in this answer, best first.", ge=1)
    itemid: int = Field(description="RetailRocket item id.")
    score: float = Field(
        description="The score within the item's own source, comparable only with items of the same source: "
        "`session`, the sum over the live session's events of similarity x event weight x recency; `model`, "
        "the model's score; `popular`, distinct visitors in the last 30 days, or the trend ratio for items "
        "taken from the trending list."
    )
    source: Source = Field(
        description="Which part of the answer this item comes from (see RecommendationsResponse.source)."
    )


class RecommendationsResponse(BaseModel):
    user_id: int = Field(description="The visitor id asked for.")
    source: Source = Field(
        description="Where the answer comes from: the source of its first item. The parts follow each other "
        "in this order, each item once, until k items. "
        "`session`: neighbours (the promoted model's similar items) of the items the visitor viewed or "
        "carted in their live session, events ingested seconds ago included; then the model's list, then "
        "the popular list. "
        "`model`: the live session yields no neighbours (there is none, or its items are not in the model's "
        "catalogue), so the promoted model's precomputed list for this visitor leads; then the popular list. "
        "`popular`: the visitor is unknown or cold and has no live session, so the popular list answered, "
        "topped up from the trending list. "
        "Never an item the visitor bought, nor one of the items of their session's newest events."
    )
    model_version: int | None = Field(
        description="model_registry.version of the model whose rows answered; null while no model is promoted "
        "and the popular lists answer every visitor."
    )
    items: list[RecommendedItem] = Field(
        description="k items; fewer only when the session, the model's list and the popular and trending "
        "lists together run out."
    )


class SimilarItem(BaseModel):
    rank: int = Field(description="1-based position, most similar first.", ge=1)
    itemid: int = Field(description="The similar item's id.")
    score: float = Field(
        description="The two items' similarity in the promoted model: the cosine of their LightFM embeddings, "
        "or the score of the other model types' item neighbourhood."
    )


class SimilarItemsResponse(BaseModel):
    item_id: int = Field(description="The item id asked for.")
    model_version: int = Field(description="model_registry.version of the model whose rows answered.")
    items: list[SimilarItem] = Field(description="At most k items, never the item itself.")


class HealthResponse(BaseModel):
    status: Literal["ok", "unavailable"] = Field(
        description="`ok` (HTTP 200) when PostgreSQL answers and serving rows are loaded: a promoted "
        "model's, or the popular lists while none is promoted (then `model_version` is null and `detail` "
        "says why); otherwise `unavailable` (HTTP 503) and `detail` says why."
    )
    postgres: Literal["ok", "unreachable"] = Field(description="Whether PostgreSQL answered.")
    model_version: int | None = Field(
        description="The model version being served (null when none is: the popular lists, or nothing)."
    )
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
