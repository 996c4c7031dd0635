"""The HTTP contract of the similarity service: typed requests and responses
(pydantic, shown on the OpenAPI page), the JSON error body every 4xx carries,
and the bearer-token check of /v1/*. Pure: no ray (the Serve glue in
pipeline/serve.py uses these)."""

import hmac
import os
import re
from collections.abc import Mapping
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


AUTH_TOKEN_ENV = "CULTURESIM_TOKEN"


def token_from_env(name: str = AUTH_TOKEN_ENV,
                   environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token the service requires: the value of the variable `name`,
    None (no auth) when it is unset or empty."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value or None


def needs_token(path: str) -> bool:
    """Every /v1/* path; /healthz and the OpenAPI pages stay open."""
    path = re.sub(r"/+", "/", path)
    return path == "/v1" or path.startswith("/v1/")


def check_bearer(path: str, authorization: str | None, token: str | None) -> JSONResponse | None:
    """None when the request may go on; else the 401 to answer. With no token
    configured every request passes. The token is compared in constant time."""
    if not token or not needs_token(path):
        return None
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                          token.encode()):
        return None
    message = ("missing bearer token (send Authorization: Bearer <token>)"
               if not authorization else "invalid bearer token")
    response = error(401, "authorization", message)
    response.headers["WWW-Authenticate"] = "Bearer"
    return response
