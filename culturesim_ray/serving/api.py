"""The HTTP contract of the similarity service: typed requests and responses
(pydantic, shown on the OpenAPI page) and the JSON error body every 4xx carries.
Pure: no ray (the Serve glue in pipeline/serve.py uses these)."""

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field


class SimilarRequest(BaseModel):
    """Exactly one of text, image, sequence."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="a text in any language the encoder reads")
    image: str | None = Field(None, description="an image file (PNG/JPEG), base64")
    sequence: str | None = Field(None, description="a melody file's contents (ABC by default)")
    sequence_format: Literal["abc", "musicxml"] = "abc"
    k: int | None = Field(None, description="cultures in the general top-k (default from config)")
    themes: list[str] | None = Field(None, description="themes to re-rank on (default: all)")


class Ranked(BaseModel):
    culture: str
    score: float
    rank: int


class ThemeRanked(Ranked):
    general_rank: int


class ThemeAnswer(BaseModel):
    gate: float = Field(description="the mixture-of-experts gate weight of this theme")
    ranking: list[ThemeRanked]


class SimilarResponse(BaseModel):
    modality: str
    k: int
    general: list[Ranked]
    themes: dict[str, ThemeAnswer]


class CulturesResponse(BaseModel):
    cultures: list[str]
    themes: list[str]


class Neighbor(BaseModel):
    culture: str
    score: float
    rank: int
    similarity: str


class NeighborsResponse(BaseModel):
    culture: str
    theme: str
    neighbors: list[Neighbor]


class ErrorBody(BaseModel):
    field: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


def error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)
