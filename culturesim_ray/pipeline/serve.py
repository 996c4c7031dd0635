"""Ray Serve glue for the similarity service (SPEC V1, V2): deployments wrapping
the plain predictors of `culturesim_ray.serving.predictor`, a FastAPI ingress,
and `app_builder(args)` for `serve run` / `serve deploy`.

    Ingress (FastAPI, typed requests/responses, every error a JSON 4xx naming the field)
      -> Encoder   query -> base embedding, @serve.batch per modality
      -> Fusion    base embedding -> fused state + general top-k (FAISS), @serve.batch
      -> Rerank    theme heads re-rank the top-k, per-theme scores and gate weights

Overload: every deployment has `max_queued_requests` (app arg, default
DEFAULT_MAX_QUEUED) and a backpressure_config whose rejections carry
`Retry-After: retry_after_s` (app arg, default 1): the proxy answers a request the
Ingress cannot queue with a 503 and that header, and the Ingress answers one that
an inner deployment cannot queue (BackPressureError on its handle) the same way,
as JSON naming the field "service". A config file's deployments section can set
either per deployment.

user_config (changeable with `serve deploy` without restarting replicas):
  max_batch_size, batch_wait_timeout_s (Ingress, Encoder, Fusion; 1 = no batching);
  Ingress also default_k, max_k, max_request_bytes. The Ingress batches too:
  concurrent requests share one call to each deployment.

Endpoints: POST /v1/similar, GET /v1/cultures, GET /v1/cultures/{id}/neighbors,
GET /healthz, GET /docs (OpenAPI page), GET /openapi.json.

Auth: when the variable named by the app arg auth_token_env (default
CULTURESIM_TOKEN) is set in the Ingress replica's environment, every /v1/*
request needs `Authorization: Bearer <token>` (else a JSON 401); /healthz stays open.
"""


import asyncio
import base64
import binascii
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from culturesim_ray import io
from culturesim_ray.encoders import resolve_precision
from culturesim_ray.layout import AllPairsLayout
from culturesim_ray.pipeline.serve_replicas import (
    DEFAULT_BATCH,
    DEFAULT_INGRESS,
    Encoder,
    Fusion,
    Rerank,
)
from culturesim_ray.serving.api import (
    AUTH_TOKEN_ENV,
    CulturesResponse,
    ErrorResponse,
    NeighborsResponse,
    SimilarRequest,
    SimilarResponse,
    check_bearer,
    error,
    overloaded,
    parse_similar,
    token_from_env,
)
from culturesim_ray.serving.errors import QueryError
from culturesim_ray.serving.neighbors import NeighborTable
from culturesim_ray.serving.predictor import RunPaths
from culturesim_ray.serving.replica import apply_batch_config

INGRESS_APP = FastAPI(
    title="culturesim",
    description="Which cultures is this text, image or melody closest to, and on which themes? "
                "The general top-k (fused embedding, FAISS) and each theme head's re-ranking "
                "of it, side by side.",
    version="1",
)


@INGRESS_APP.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
    return error(422, field, first.get("msg", "invalid value"))


@INGRESS_APP.exception_handler(BackPressureError)
@INGRESS_APP.exception_handler(DeploymentUnavailableError)
async def _overloaded(_: Request, exc: Exception) -> JSONResponse:
    """An inner deployment shed the request (its queue is full) or has no replica
    right now: a 503 with Retry-After, never a 500."""
    ingress = serve.get_replica_context().servable_object
    after = getattr(exc, "retry_after_s", None) or ingress.retry_after_s
    return overloaded(after, getattr(exc, "status_code", 503), str(exc))


@INGRESS_APP.exception_handler(StarletteHTTPException)
async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error(exc.status_code, "path" if exc.status_code == 404 else "request",
                 str(exc.detail))


class BearerAuth:
    """ASGI middleware: the Ingress replica's token (`Ingress.auth_token`) guards
    /v1/* before routing, so neither a 404 nor a 422 answers an unauthenticated
    request. Pure ASGI (no BaseHTTPMiddleware): nothing added to an open request's path."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            # an AttributeError here is a 500, never an open door
            token = serve.get_replica_context().servable_object.auth_token
            if token:
                path = scope.get("path", "")
                root = scope.get("root_path", "")
                if root and path.startswith(root):
                    path = path[len(root):]
                headers = dict(scope.get("headers") or [])
                given = headers.get(b"authorization")
                denied = check_bearer(path, given.decode("latin-1") if given is not None
                                      else None, token)
                if denied is not None:
                    await denied(scope, receive, send)
                    return
        await self.app(scope, receive, send)


INGRESS_APP.add_middleware(BearerAuth)  # before serve.ingress freezes a copy of the app


@serve.deployment(ray_actor_options={"num_cpus": 0.25}, user_config=DEFAULT_INGRESS)
@serve.ingress(INGRESS_APP)
class Ingress:
    def __init__(self, encoder: DeploymentHandle, fusion: DeploymentHandle,
                 rerank: DeploymentHandle, allpairs_dir: str | None = None,
                 auth_token_env: str = AUTH_TOKEN_ENV, retry_after_s: float = 1.0) -> None:
        self.encoder, self.fusion, self.rerank_handle = encoder, fusion, rerank
        self.retry_after_s = retry_after_s
        self.auth_token = token_from_env(auth_token_env)  # None: no auth
        self.neighbor_table = (NeighborTable(AllPairsLayout(allpairs_dir).pairs)
                               if allpairs_dir else None)
        self.cfg = dict(DEFAULT_INGRESS)
        self._info: dict[str, Any] | None = None

    def reconfigure(self, cfg: dict[str, Any]) -> None:
        self.cfg = {**DEFAULT_INGRESS, **cfg}
        apply_batch_config(self.cfg, DEFAULT_BATCH, self._pipeline)

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            fusion = await self.fusion.info.remote()
            self._info = {**fusion, "themes": await self.rerank_handle.themes.remote(),
                          "encoders": await self.encoder.modalities.remote()}
        return self._info

    @INGRESS_APP.get("/healthz")
    async def healthz(self) -> dict[str, Any]:
        info = await self.info()
        return {"status": "ok", "pid": os.getpid(), "cultures": len(info["cultures"]),
                "modalities": info["modalities"], "themes": info["themes"],
                "auth": "bearer" if self.auth_token else "none"}

    @INGRESS_APP.get("/v1/cultures", response_model=CulturesResponse)
    async def cultures(self) -> dict[str, Any]:
        info = await self.info()
        return {"cultures": info["cultures"], "themes": info["themes"]}

    @INGRESS_APP.get("/v1/cultures/{culture_id}/neighbors", response_model=NeighborsResponse,
                     responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    async def neighbors(self, culture_id: str, theme: str = "general",
                        k: int = 10) -> Any:
        if not 1 <= k <= self.cfg["max_k"]:
            return error(422, "k", f"k must be in 1..{self.cfg['max_k']}, got {k}")
        if self.neighbor_table is None:
            return error(404, "culture_id", "this service was started without all-pairs output")
        try:
            return self.neighbor_table.answer(culture_id, theme, k)
        except QueryError as exc:
            return error(exc.status, exc.field, exc.message)

    @INGRESS_APP.post(
        "/v1/similar", response_model=SimilarResponse,
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": SimilarRequest.model_json_schema()}}}},
        responses={c: {"model": ErrorResponse} for c in (400, 413, 415, 422)})
    async def similar(self, request: Request) -> Any:
        ctype = request.headers.get("content-type", "")
        limit = int(self.cfg["max_request_bytes"])
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return error(413, "body", f"request of {declared} bytes exceeds {limit}")
        # the body is read only for a JSON content type (parse_similar answers 415 first)
        body = await request.body() if "json" in ctype.lower() else b""
        req = parse_similar(ctype, body, limit)
        if isinstance(req, JSONResponse):
            return req
        try:
            return await self._similar(req)
        except QueryError as exc:
            return error(exc.status, exc.field, exc.message)

    async def _similar(self, req: SimilarRequest) -> dict[str, Any]:
        given = [f for f in ("text", "image", "sequence") if getattr(req, f) is not None]
        if len(given) != 1:
            raise QueryError("text" if not given else given[1],
                             "give exactly one of text, image, sequence"
                             + (f" (got {', '.join(given)})" if given else ""), 422)
        modality = given[0]
        k = self.cfg["default_k"] if req.k is None else req.k
        if not 1 <= k <= self.cfg["max_k"]:
            raise QueryError("k", f"k must be in 1..{self.cfg['max_k']}, got {k}", 422)
        info = await self.info()
        if req.themes is not None:
            unknown = [t for t in req.themes if t not in info["themes"]]
            if unknown:
                raise QueryError("themes", f"unknown theme(s) {unknown} (this model has: "
                                 f"{', '.join(info['themes']) or 'none'})", 422)
        if modality not in info["modalities"] or modality not in info["encoders"]:
            raise QueryError(modality, f"this service has no {modality} model (modalities: "
                             f"{', '.join(info['modalities'])})", 422)
        if modality == "text":
            if not req.text or not req.text.strip():
                raise QueryError("text", "empty text")
            payload: Any = req.text
        elif modality == "image":
            try:
                payload = base64.b64decode(req.image or "", validate=True)
            except (binascii.Error, ValueError) as exc:
                raise QueryError("image", f"invalid base64: {exc}") from exc
            if not payload:
                raise QueryError("image", "empty image")
        else:
            if not req.sequence or not req.sequence.strip():
                raise QueryError("sequence", "empty sequence")
            payload = (req.sequence, req.sequence_format)
        target = modality
        if req.cross_modal:
            found = await self.encoder.cross_target.remote(modality, info["slots"])
            if isinstance(found, dict):
                raise QueryError(*found["error"])
            target = found
        answer = await self._pipeline((modality, payload, k, req.themes, target))
        if "error" in answer:
            raise QueryError(modality, answer["error"])
        return {"modality": modality, "k": len(answer["general"]), **answer}

    @serve.batch(**DEFAULT_BATCH, max_concurrent_batches=4)  # stages overlap across batches
    async def _pipeline(self, queries: list[tuple]) -> list[dict[str, Any]]:
        """Concurrent requests travel together: one Encoder, one Fusion and one
        Rerank call per modality in the batch, not three calls per request (the
        hops, not the models, are most of a request's CPU on a small machine)."""
        out: list[dict[str, Any]] = [{}] * len(queries)

        async def run(modality: str) -> None:
            idx = [i for i, q in enumerate(queries) if q[0] == modality]
            encoded = await self.encoder.encode.remote(modality, [queries[i][1] for i in idx])
            found = await self.fusion.search.remote(modality, encoded,
                                                    [queries[i][2] for i in idx],
                                                    [queries[i][4] for i in idx])
            answers = await self.rerank_handle.answer.remote(found, [queries[i][3] for i in idx])
            for i, a in zip(idx, answers, strict=True):
                out[i] = a

        await asyncio.gather(*(run(m) for m in sorted({q[0] for q in queries})))
        return out


# ---------------------------------------------------------------- application
def app_builder(args: dict[str, Any]) -> Any:
    """The application for `serve run` / `serve deploy` (import path
    culturesim_ray.pipeline.serve:app_builder). args: run_dir (the demo layout:
    RUN/embed, RUN/train, RUN/allpairs), or embed_dir + train_dir [+ allpairs_dir];
    use_gpu (the encoder, fusion and rerank models on CUDA when present); k_graph;
    torch_threads (intra-op threads of the encoder and fusion replicas; 0 = Ray's
    default, the replica's num_cpus); precision (the text encoder's dtype: auto,
    float32 or bfloat16; auto = bfloat16 where the CPU or GPU computes it natively);
    batch (batching user_config of Ingress, Encoder, Fusion) and ingress (Ingress's)
    as starting values; a config file's deployments section overrides them;
    auth_token_env (default CULTURESIM_TOKEN): the variable holding the bearer
    token /v1/* requires, read in the Ingress replica (unset or empty: no auth);
    max_queued_requests (default DEFAULT_MAX_QUEUED; -1: no limit) and retry_after_s
    (default 1): each deployment's queue bound and the Retry-After of its rejections."""
    from culturesim_ray.pipeline.ray_env import set_safe_env

    set_safe_env()
    if args.get("run_dir"):
        paths = RunPaths.of(str(args["run_dir"]))
    else:
        missing = [k for k in ("embed_dir", "train_dir") if not args.get(k)]
        if missing:
            raise ValueError(f"app args need run_dir, or embed_dir and train_dir "
                             f"(missing: {', '.join(missing)})")
        paths = RunPaths(str(args["embed_dir"]), str(args["train_dir"]),
                         args.get("allpairs_dir"))
    from culturesim_ray.layout import EmbedLayout, TrainLayout

    for p in (EmbedLayout(paths.embed).manifest, TrainLayout(paths.train).model):
        if not io.exists(p):
            raise FileNotFoundError(
                f"{p}: not found. Serve a run directory holding embed/ and train/ "
                f"(culturesim demo --out RUN writes both) or a train run's own directory "
                f"(culturesim train EMBED --out TRAIN)")

    def where(p: str) -> str:  # replicas may start elsewhere: absolute local paths
        return p if io.is_s3(p) else str(Path(p).absolute())

    use_gpu = bool(args.get("use_gpu", False))
    batch = {**DEFAULT_BATCH, **(args.get("batch") or {})}
    ingress = {**DEFAULT_INGRESS, **batch, **(args.get("ingress") or {})}
    threads = int(args.get("torch_threads", 0))
    precision = str(args.get("precision", "auto"))
    resolve_precision(precision, "cpu")  # a ValueError naming a bad value, before deploying
    shed = _overload_options(args)
    encoder = Encoder.options(user_config=batch, **shed).bind(where(paths.embed), use_gpu,
                                                               threads, precision)
    fusion = Fusion.options(user_config=batch, **shed).bind(
        where(paths.train), where(paths.embed), use_gpu, int(args.get("k_graph", 10)), threads)
    rerank = Rerank.options(**shed).bind(where(paths.train), use_gpu)
    allpairs = where(paths.allpairs) if paths.allpairs else None
    token_env = args.get("auth_token_env", AUTH_TOKEN_ENV)
    if not isinstance(token_env, str) or not token_env.strip():
        raise ValueError(f"auth_token_env must name an environment variable, got {token_env!r}")
    return Ingress.options(user_config=ingress, **shed).bind(
        encoder, fusion, rerank, allpairs, token_env.strip(),
        shed["backpressure_config"]["retry_after_s"])


DEFAULT_MAX_QUEUED = 256  # requests waiting per deployment beyond max_ongoing_requests


def _overload_options(args: dict[str, Any]) -> dict[str, Any]:
    """Deployment options bounding each queue: max_queued_requests and a
    backpressure_config whose 503s carry Retry-After (validated here, by name)."""
    queued = args.get("max_queued_requests", DEFAULT_MAX_QUEUED)
    after = args.get("retry_after_s", 1.0)
    if isinstance(queued, bool) or not isinstance(queued, int) or (queued < 1 and queued != -1):
        raise ValueError(f"max_queued_requests must be a positive integer or -1 (no limit), "
                         f"got {queued!r}")
    if (isinstance(after, bool) or not isinstance(after, int | float)
            or not 0 < after < 3600):
        raise ValueError(f"retry_after_s must be a number of seconds in (0, 3600), "
                         f"got {after!r}")
    return {"max_queued_requests": queued,
            "backpressure_config": {"status_code": 503, "retry_after_s": float(after)}}
