"""The HTTP contract of the similarity service: typed requests and responses
(pydantic, shown on the OpenAPI page), the JSON error body every 4xx carries,
and the bearer-token check of /v1/*. Pure: no ray (the Serve glue in
pipeline/serve.py uses these)."""

import hmac
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class SimilarRequest(BaseModel):
    """Exactly one of text, image, sequence."""

    model_config = ConfigDict(extra="forbid")
    text: str | None = Field(None, description="a text in any language the encoder reads")
    image: str | None = Field(None, description="an image file (PNG/JPEG), base64")
    sequence: str | None = Field(None, description="a melody file's contents (ABC by default)")
    sequence_format: Literal["abc", "musicxml", "krn"] = "abc"
    k: int | None = Field(None, description="cultures in the general top-k (default from config)")
    themes: list[str] | None = Field(None, description="themes to re-rank on (default: all)")
    cross_modal: bool = Field(False, description="rank the cultures by their other modality: "
                              "a text query against their images, an image query against their "
                              "texts (a run embedded with --image-align)")

    @field_validator("text", "image", "sequence", "themes")
    @classmethod
    def _unicode(cls, v: str | list[str] | None) -> str | list[str] | None:
        """No lone surrogates (JSON "\\ud800"): no encoder or log line can take them."""
        for s in [v] if isinstance(v, str) else v or []:
            try:
                s.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"not valid Unicode text ({exc.reason} at {exc.start})") from None
        return v


class Ranked(BaseModel):
    culture: str
    score: float
    rank: int


class Evidence(BaseModel):
    item_id: str = Field(description="the corpus item (its item_id)")
    modality: str = Field(description="its modality: the query's")
    similarity: float = Field(description="its cosine with the query's encoder vector, "
                              "after removing the corpus's dominant directions where the "
                              "run's query mix does for this modality (texts by default)")


class GeneralRanked(Ranked):
    evidence: Evidence | None = Field(
        None, description="the culture's corpus item nearest to the query among the "
        "query's nearest corpus items (the shortlist the nearest-item part of the score "
        "reads): why the culture is here; null when none of its items is in that "
        "shortlist, for a cross-modal query, or for a run trained before item ids were "
        "kept with the serving state")


class ThemeRanked(Ranked):
    general_rank: int


class ThemeAnswer(BaseModel):
    gate: float = Field(description="the gate's weight of this theme for the query: how "
                        "likely the query is about it (a classifier of the corpus items' "
                        "theme tags); the weights of all themes sum to 1")
    ranking: list[ThemeRanked]


class SimilarResponse(BaseModel):
    modality: str
    k: int
    general: list[GeneralRanked]
    themes: dict[str, ThemeAnswer]
    note: str | None = Field(
        None, description="what to know before trusting this answer, e.g. a text query "
        "the run's English text encoder cuts into single characters (Cyrillic, Arabic, "
        "CJK...); null when there is nothing to say")


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


def parse_similar(content_type: str | None, body: bytes,
                  limit: int) -> SimilarRequest | JSONResponse:
    """A POST /v1/similar body as the typed request, or the 4xx naming the part at
    fault (content-type, body, or the field): never an exception, whatever the bytes
    (invalid UTF-8, JSON nested past the parser's depth, integers too long to read)."""
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        return error(415, "content-type", f"expected application/json, got "
                                          f"{(content_type or '')[:100] or 'nothing'}")
    if len(body) > limit:
        return error(413, "body", f"request of {len(body)} bytes exceeds {limit}")
    try:
        data = json.loads(body)
    except RecursionError:
        return error(400, "body", "not JSON this service reads: nested too deeply")
    except ValueError as exc:  # JSONDecodeError, invalid UTF-8, an integer of > 4300 digits
        return error(400, "body", f"not JSON: {str(exc)[:200]}")
    try:
        return SimilarRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "body"
        return error(422, field, first.get("msg", "invalid value"))


def overloaded(retry_after_s: float, status: int = 503,
               message: str = "the service is at capacity; retry later") -> JSONResponse:
    """The answer to a request shed under load: a JSON 503 (or 429) whose
    `Retry-After` header says, in whole seconds (at least 1), when to come back."""
    response = error(status, "service", message)
    response.headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return response


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
