"""The reward service: the composite reward behind HTTP (FastAPI), JSON only.

    POST /v1/score  {"items": [{"completion": str, "num_tokens": int, "reference": {record}}]}
                 →  {"results": [{"total": float | null, "parts": {...}, "error": str | null}]}
    GET  /healthz   {"status": "ok"}
    GET  /metrics   Prometheus text: requests by status, items, item errors, latency histogram

Results come back in item order. A reference that fails the record schema (or any other
per-item failure) gives that item `"total": null`, `"parts": {}` and the reason in "error"; the
rest of the batch is scored. The request itself is checked first, every failure a 4xx that says
why: 401 without the bearer token (when one is set), 413 past max_body_bytes, 415 for a
non-JSON content type, 422 for a body that is not JSON or breaks the envelope (the message
names the field, e.g. "items[3].num_tokens: must be a non-negative integer"). No input gives a
5xx. Bodies are parsed with `json.loads` only (never pickle).

Scoring runs in a worker thread so /healthz answers while a large batch is scored. /metrics
counts this process (with Ray Serve: one replica). `rewards.serve` runs this app under uvicorn
or as Ray Serve replicas.
"""
from __future__ import annotations

import bisect
import hmac
import json
import math
import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from medmo_rl.config import RewardConfig

from rewards.composite import ScoreItem, ScoreResult, score_items
from rewards.parsing import as_reference

DEFAULT_MAX_BODY_BYTES = 16 * 2**20  # a 256-item batch of 1k-token completions is ≈ 1.5 MB
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_ITEM_KEYS = ("completion", "num_tokens", "reference")


class AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped: a lone surrogate echoed in an error message cannot break encoding."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


class RequestError(Exception):
    """A request that breaks the envelope → 422 "field: problem"."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


class Metrics:
    """Counters and a latency histogram for this process, rendered as Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[int, int] = {}  # HTTP status → count (POST /v1/score)
        self.items = 0
        self.item_errors = 0
        self.buckets = [0] * (len(_LATENCY_BUCKETS_S) + 1)  # last: +Inf
        self.latency_sum_s = 0.0

    def observe(self, status: int, items: int, item_errors: int, latency_s: float) -> None:
        with self._lock:
            self.requests[status] = self.requests.get(status, 0) + 1
            self.items += items
            self.item_errors += item_errors
            self.buckets[bisect.bisect_left(_LATENCY_BUCKETS_S, latency_s)] += 1
            self.latency_sum_s += latency_s

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP medmo_reward_requests_total POST /v1/score requests by HTTP status.",
                "# TYPE medmo_reward_requests_total counter",
                *(f'medmo_reward_requests_total{{status="{s}"}} {n}' for s, n in sorted(self.requests.items())),
                "# HELP medmo_reward_items_total Items received in accepted requests.",
                "# TYPE medmo_reward_items_total counter",
                f"medmo_reward_items_total {self.items}",
                "# HELP medmo_reward_item_errors_total Items returned with an error instead of a reward.",
                "# TYPE medmo_reward_item_errors_total counter",
                f"medmo_reward_item_errors_total {self.item_errors}",
                "# HELP medmo_reward_request_seconds Latency of POST /v1/score.",
                "# TYPE medmo_reward_request_seconds histogram",
            ]
            cumulative = 0
            for le, n in zip((*map(str, _LATENCY_BUCKETS_S), "+Inf"), self.buckets):
                cumulative += n
                lines.append(f'medmo_reward_request_seconds_bucket{{le="{le}"}} {cumulative}')
            lines.append(f"medmo_reward_request_seconds_sum {self.latency_sum_s:.6f}")
            lines.append(f"medmo_reward_request_seconds_count {cumulative}")
        return "\n".join(lines) + "\n"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_items(body: bytes) -> list[tuple[str, int, Any]]:
    """The request envelope → [(completion, num_tokens, raw reference)]; RequestError names the field."""
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, NaN, 10⁵-digit ints
        raise RequestError("body", f"not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(payload, dict):
        raise RequestError("body", f"must be a JSON object with 'items', got {type(payload).__name__}")
    extra = sorted(set(payload) - {"items"})
    if extra:
        raise RequestError(extra[0][:80], "unknown field; allowed: items")
    items = payload.get("items")
    if not isinstance(items, list):
        raise RequestError("items", "required, must be a list of {completion, num_tokens, reference}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise RequestError(f"items[{i}]", f"must be an object, got {type(item).__name__}")
        extra = sorted(set(item) - set(_ITEM_KEYS))
        if extra:
            raise RequestError(f"items[{i}].{extra[0][:80]}", f"unknown field; allowed: {', '.join(_ITEM_KEYS)}")
        for key in _ITEM_KEYS:
            if key not in item:
                raise RequestError(f"items[{i}].{key}", "required")
        completion, num_tokens, reference = item["completion"], item["num_tokens"], item["reference"]
        if not isinstance(completion, str):
            raise RequestError(f"items[{i}].completion", f"must be a string, got {type(completion).__name__}")
        if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 0:
            raise RequestError(f"items[{i}].num_tokens", f"must be a non-negative integer, got {num_tokens!r:.40}")
        if not isinstance(reference, dict):
            raise RequestError(f"items[{i}].reference", f"must be a record object, got {type(reference).__name__}")
        out.append((completion, num_tokens, reference))
    return out


def _result_json(r: ScoreResult) -> dict[str, Any]:
    if r.error is not None or not math.isfinite(r.total):
        return {"total": None, "parts": {}, "error": r.error or "non-finite total"}
    return {"total": r.total, "parts": dict(r.parts), "error": None}


def score_request(body: bytes, config: RewardConfig) -> tuple[list[dict[str, Any]], int]:
    """Parse, validate and score one request body → (results JSON, number of failed items)."""
    raw = parse_items(body)
    results: list[ScoreResult | None] = [None] * len(raw)
    todo: list[int] = []
    items: list[ScoreItem] = []
    for i, (completion, num_tokens, reference) in enumerate(raw):
        try:
            items.append(ScoreItem(completion, num_tokens, as_reference(reference)))
            todo.append(i)
        except Exception as exc:  # noqa: BLE001 — SampleError, or e.g. an image_size of 1e999
            results[i] = ScoreResult(math.nan, {}, f"reference: {exc}")
    try:
        scored = score_items(items, config)
    except Exception as exc:  # noqa: BLE001 — a bug must cost the batch its rewards, not a 500
        scored = [ScoreResult(math.nan, {}, f"internal error: {type(exc).__name__}: {exc}")] * len(items)
    for i, r in zip(todo, scored):
        results[i] = r
    out = [_result_json(r) for r in results]  # type: ignore[arg-type]
    return out, sum(r["error"] is not None for r in out)


def create_app(
    config: RewardConfig, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> FastAPI:
    """The service app. token: required as "Authorization: Bearer <token>" when not None/empty."""
    app = FastAPI(title="medmo-rl rewards", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics()
    expected = f"Bearer {token}".encode() if token else None

    def authorized(request: Request) -> bool:
        given = request.headers.get("authorization", "").encode("latin-1", "replace")
        return expected is None or hmac.compare_digest(given, expected)

    def error(status: int, detail: str, **headers: str) -> JSONResponse:
        return AsciiJSONResponse({"detail": detail}, status_code=status, headers=headers or None)

    async def read_body(request: Request) -> bytes | JSONResponse:
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

    async def handle(request: Request) -> tuple[Response, int, int]:
        if not authorized(request):
            return error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"}), 0, 0
        body = await read_body(request)
        if isinstance(body, Response):
            return body, 0, 0
        try:
            results, failed = await run_in_threadpool(score_request, body, config)
        except RequestError as exc:
            return error(422, str(exc)), 0, 0
        return AsciiJSONResponse({"results": results}), len(results), failed

    @app.post("/v1/score")
    async def v1_score(request: Request) -> Response:
        t0 = time.perf_counter()
        response, n_items, n_failed = await handle(request)
        metrics.observe(response.status_code, n_items, n_failed, time.perf_counter() - t0)
        return response

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics_text(request: Request) -> Response:
        if not authorized(request):
            return error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    return app
