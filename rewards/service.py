"""The reward service: the composite reward behind HTTP (FastAPI), JSON only.

    POST /v1/score    {"items": [{"completion": str, "num_tokens": int, "reference": {record}}]}
                   →  {"results": [{"total": float | null, "parts": {...}, "error": str | null}]}
    POST /get_reward  OpenRLHF's remote reward protocol (rewards/openrlhf.py)
    GET  /healthz     {"status": "ok"}
    GET  /metrics     Prometheus text (prometheus_client): requests by route and status, items,
                      item errors, latency histogram
    GET  /openapi.json  every route's request and response schema (rewards/api.py)

Results come back in item order. A reference that fails the record schema (or any other
per-item failure) gives that item `"total": null`, `"parts": {}` and the reason in "error"; the
rest of the batch is scored. The request itself is checked first, every failure a 4xx that says
why: 401 without the bearer token (when one is set), 413 past max_body_bytes, 415 for a
non-JSON content type, 422 for a body that is not JSON or breaks the envelope (the message
names the field, e.g. "items[3].num_tokens: must be an integer >= 0"). No input gives a 5xx.
Bodies are decoded by msgspec into the Structs of rewards/api.py (never pickle).

Each distinct reference is validated once (`ReferenceCache`, keyed by its raw JSON): G
completions of one prompt share it. A body up to `inline_bytes` (1 MiB, ≈ 800 completions,
≈ 12 ms of work) is scored on the event loop itself: a hop to a thread and back, and the two
threads trading the GIL, cost more than such a batch (measured at 64 concurrent clients of 32
completions: 1,116 requests/s on the loop vs 772/s through the thread). Larger bodies are scored
on one worker thread per process (FIFO), so /healthz still answers while they run.
/metrics counts this process, or all uvicorn workers when PROMETHEUS_MULTIPROC_DIR is set
(`python -m rewards.serve --workers N` sets it). `rewards.serve` runs this app under uvicorn or
as Ray Serve replicas.
"""
from __future__ import annotations

import hmac
import json
import math
import os
import time
from typing import Any, Callable

import anyio
import msgspec
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from medmo_rl.config import RewardConfig

from rewards import api
from rewards.composite import ScoreItem, ScoreResult, score_items
from rewards.labels import LabelError, ReferenceCache
from rewards.openrlhf import TokenCounter, get_reward, load_token_counter
from rewards.parsing import as_reference

DEFAULT_MAX_BODY_BYTES = 16 * 2**20  # a 256-item batch of 1k-token completions is ≈ 1.5 MB
DEFAULT_REFERENCE_CACHE = 8192  # records; ≈ 10 MB at RL-sized records
DEFAULT_INLINE_BYTES = 2**20  # bodies up to this size are scored on the event loop (≈ 800 completions, ≈ 12 ms)
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_score_decoder = api.decoder(api.ScoreRequest)
_reward_decoder = api.decoder(api.RewardRequest)
_raw_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class Metrics:
    """prometheus_client metrics of one app (own registry: tests run several apps in one process)."""

    def __init__(self) -> None:
        multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self.registry = CollectorRegistry()
        # multi-process mode: values live in files, one set per worker; collected below
        reg = None if multiproc else self.registry
        self.requests = Counter("medmo_reward_requests", "POST requests by route and HTTP status.",
                                ["route", "status"], registry=reg)
        self.items = Counter("medmo_reward_items", "Items received in accepted requests.", ["route"], registry=reg)
        self.item_errors = Counter("medmo_reward_item_errors", "Items returned with an error (or 0.0) instead "
                                   "of a reward.", ["route"], registry=reg)
        self.latency = Histogram("medmo_reward_request_seconds", "Latency of POST requests.", ["route"],
                                 buckets=_LATENCY_BUCKETS_S, registry=reg)
        if multiproc:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(self.registry)

    def observe(self, route: str, status: int, items: int, item_errors: int, latency_s: float) -> None:
        self.requests.labels(route, str(status)).inc()
        if status == 200:
            self.items.labels(route).inc(items)
            self.item_errors.labels(route).inc(item_errors)
        self.latency.labels(route).observe(latency_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    try:
        body = _encoder.encode(obj)
    except UnicodeEncodeError:  # a lone surrogate cannot reach here through msgspec; never a 500 anyway
        body = json.dumps(msgspec.to_builtins(obj), ensure_ascii=True).encode("ascii")
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _reference_from_raw(raw: bytes) -> Any:
    try:
        return as_reference(_raw_decoder.decode(raw))
    except (msgspec.DecodeError, RecursionError) as exc:  # e.g. 1e999: out of range
        raise LabelError("reference", f"not valid JSON ({str(exc)[:120]})") from None
    except (ValueError, TypeError, OverflowError) as exc:  # SampleError names record and field
        raise LabelError("reference", str(exc)) from None


def _result_body(r: ScoreResult) -> api.ScoreResultBody:
    if r.error is not None or not math.isfinite(r.total):
        return api.ScoreResultBody(None, {}, r.error or "non-finite total")
    return api.ScoreResultBody(r.total, dict(r.parts), None)


def score_batch(body: bytes, config: RewardConfig, references: ReferenceCache | None = None) -> api.ScoreResponse:
    """Decode, validate and score one /v1/score body; RequestError (→ 422) for a bad envelope."""
    request = api.decode(_score_decoder, body)
    references = references if references is not None else ReferenceCache(0)
    results: list[api.ScoreResultBody | None] = [None] * len(request.items)
    todo: list[int] = []
    items: list[ScoreItem] = []
    for i, item in enumerate(request.items):
        if not api.reference_is_object(item.reference):
            raise api.RequestError(f"items[{i}].reference", "must be a record object, got "
                                   f"{type(_raw_decoder.decode(item.reference)).__name__}")
        try:
            ref = references.get(bytes(item.reference), _reference_from_raw)
        except LabelError as exc:
            results[i] = api.ScoreResultBody(None, {}, str(exc))
            continue
        items.append(ScoreItem(item.completion, item.num_tokens, ref))
        todo.append(i)
    try:
        scored = score_items(items, config)
    except Exception as exc:  # noqa: BLE001 — a bug must cost the batch its rewards, not a 500
        scored = [ScoreResult(math.nan, {}, f"internal error: {type(exc).__name__}: {exc}")] * len(items)
    for i, r in zip(todo, scored):
        results[i] = _result_body(r)
    return api.ScoreResponse(results)  # type: ignore[arg-type]


def score_request(body: bytes, config: RewardConfig) -> tuple[list[dict[str, Any]], int]:
    """`score_batch` as plain JSON values → (results, number of failed items)."""
    results = msgspec.to_builtins(score_batch(body, config).results)
    return results, sum(r["error"] is not None for r in results)


def _error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    why = {401: "missing or wrong bearer token", 413: "body too large", 415: "content type is not JSON",
           422: "body is not JSON or breaks the envelope; detail names the field"}
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    return {c: {"description": why[c], **ref} for c in codes}


def _json_route(request_schema: str, response_schema: str, summary: str) -> dict[str, Any]:
    return dict(
        summary=summary,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{request_schema}"}}}},
            "security": [{"bearer": []}],
        },
        responses={200: {"description": "scored", "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{response_schema}"}}}},
            **_error_responses(401, 413, 415, 422)},
        response_class=Response,
    )


def create_app(
    config: RewardConfig,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    *,
    tokenizer: str | None = None,
    reference_cache: int = DEFAULT_REFERENCE_CACHE,
    inline_bytes: int = DEFAULT_INLINE_BYTES,
) -> FastAPI:
    """The service app. token: required as "Authorization: Bearer <token>" when not None/empty.

    tokenizer: a tokenizer.json (or a folder holding one) for /get_reward's overlong part.
    reference_cache: validated references kept per process (0: validate every item).
    inline_bytes: bodies up to this size are scored on the event loop, larger ones on the worker
    thread (0: every body on the thread).
    """
    app = FastAPI(title="medmo-rl rewards", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    metrics = Metrics()
    references = ReferenceCache(reference_cache)
    count_tokens: TokenCounter | None = load_token_counter(tokenizer) if tokenizer else None
    expected = f"Bearer {token}".encode() if token else None
    worker = anyio.CapacityLimiter(1)  # FIFO for large bodies: one at a time holds the GIL

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        return expected is None or hmac.compare_digest(given, expected)

    def error(status: int, detail: str, **headers: str) -> Response:
        return _json(api.ErrorBody(detail), status, headers or None)

    def unauthorized() -> Response:
        return error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes | Response:
        declared = request.headers.get("content-length", "")
        if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > max_body_bytes):
            return error(413, f"body of {declared} bytes exceeds the limit of {max_body_bytes}")
        kind = request.headers.get("content-type", "application/json").lower()
        if "json" not in kind:
            return error(415, f"content type {kind[:80]!r} not accepted; send application/json")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return error(413, f"body exceeds the limit of {max_body_bytes} bytes")
        return bytes(body)

    async def handle(request: Request, route: str, work: Callable[[bytes], tuple[Any, int, int]]) -> Response:
        t0 = time.perf_counter()
        n_items = n_failed = 0
        if not authorized(request):
            response = unauthorized()
        else:
            body = await read_body(request)
            if isinstance(body, Response):
                response = body
            else:
                try:
                    if len(body) <= inline_bytes:  # a few ms of work: a thread hop would cost more than it saves
                        out, n_items, n_failed = work(body)
                    else:  # long work runs on the worker thread, so /healthz and small batches still answer
                        out, n_items, n_failed = await anyio.to_thread.run_sync(work, body, limiter=worker)
                    response = _json(out)
                except api.RequestError as exc:
                    response = error(422, str(exc))
        metrics.observe(route, response.status_code, n_items, n_failed, time.perf_counter() - t0)
        return response

    def v1_score_work(body: bytes) -> tuple[api.ScoreResponse, int, int]:
        out = score_batch(body, config, references)
        return out, len(out.results), sum(r.error is not None for r in out.results)

    def get_reward_work(body: bytes) -> tuple[api.RewardResponse, int, int]:
        out = get_reward(api.decode(_reward_decoder, body), config, references=references, count_tokens=count_tokens)
        return out, len(out.rewards), int(sum(out.extra_logs["unscored"]))

    @app.post("/v1/score", **_json_route("ScoreRequest", "ScoreResponse", "Score completions against references"))
    async def v1_score(request: Request) -> Response:
        return await handle(request, "/v1/score", v1_score_work)

    @app.post("/get_reward", **_json_route("RewardRequest", "RewardResponse", "OpenRLHF remote reward protocol"))
    async def openrlhf_get_reward(request: Request) -> Response:
        return await handle(request, "/get_reward", get_reward_work)

    @app.get("/healthz", response_class=Response, responses={200: {"description": "alive", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}}}})
    async def healthz() -> Response:
        return _json(api.Health("ok"))

    @app.get("/metrics", response_class=Response, openapi_extra={"security": [{"bearer": []}]}, responses={
        200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
        **_error_responses(401)})
    async def metrics_text(request: Request) -> Response:
        if not authorized(request):
            return unauthorized()
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                 description="MedMO verifiable rewards (rewards/service.py)")
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(api.openapi_components())
            if token:  # documented only when enforced, so the schema says what this server does
                components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
            else:
                for path in schema["paths"].values():
                    for op in path.values():
                        op.pop("security", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
