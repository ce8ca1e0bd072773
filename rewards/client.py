"""Client of the reward service (`rewards.service`): typed items in, typed results out.

    with RewardClient("http://127.0.0.1:8000", max_concurrency=8, retries=3) as client:
        results = client.score([ScoreItem(completion, num_tokens, sample), ...])

Items are sent in chunks of `chunk_size`, at most `max_concurrency` requests in flight (threads
sharing one httpx connection pool). A chunk is retried on connection errors, timeouts, 429 and
5xx, waiting backoff_s·2^attempt between tries; any other 4xx is final. An item that still fails
— its chunk gave up, or the server could not score it — comes back with total = NaN and the
reason in `error`, and is counted in `client.failed_items`: never a silent 0 or None.
token: the bearer token; None → $MEDMO_REWARD_TOKEN when set (the service reads the same variable).
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx

from medmo_rl.schema import Sample

from rewards.composite import ScoreItem, ScoreResult

__all__ = ["TOKEN_ENV", "RewardClient", "ScoreItem", "ScoreResult"]

TOKEN_ENV = "MEDMO_REWARD_TOKEN"  # the service's bearer token, when it has one


def _item_json(item: ScoreItem) -> dict[str, Any]:
    ref = item.reference.to_json() if isinstance(item.reference, Sample) else item.reference
    return {"completion": item.completion, "num_tokens": item.num_tokens, "reference": ref}


def _result(raw: Any) -> ScoreResult:
    if not isinstance(raw, dict):
        return ScoreResult(math.nan, {}, f"malformed result from the service: {str(raw)[:80]}")
    total, parts, error = raw.get("total"), raw.get("parts"), raw.get("error")
    if error is not None or not isinstance(total, (int, float)) or isinstance(total, bool):
        return ScoreResult(math.nan, {}, str(error) if error is not None else f"no total in {str(raw)[:80]}")
    try:
        return ScoreResult(float(total), {str(k): float(v) for k, v in parts.items()}, None)
    except (AttributeError, TypeError, ValueError):
        return ScoreResult(math.nan, {}, f"malformed parts in {str(raw)[:80]}")


class RewardClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_concurrency: int = 8,
        retries: int = 3,
        backoff_s: float = 0.5,
        chunk_size: int = 256,
    ):
        if max_concurrency < 1 or chunk_size < 1 or retries < 0:
            raise ValueError("max_concurrency and chunk_size must be >= 1, retries >= 0")
        token = os.environ.get(TOKEN_ENV) if token is None else token
        self.url = url.rstrip("/")
        self.retries, self.backoff_s, self.chunk_size = retries, backoff_s, chunk_size
        self.max_concurrency = max_concurrency
        self.failed_items = 0  # items returned with an error, over this client's life
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            headers={"Authorization": f"Bearer {token}"} if token else None,
        )
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="reward-client")

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        """One ScoreResult per item, in order; failures as NaN + error (module docstring)."""
        chunks = [items[i : i + self.chunk_size] for i in range(0, len(items), self.chunk_size)]
        results = [r for chunk in self._pool.map(self._score_chunk, chunks) for r in chunk]
        failed = sum(r.error is not None for r in results)
        with self._lock:
            self.failed_items += failed
        return results

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def _score_chunk(self, chunk: Sequence[ScoreItem]) -> list[ScoreResult]:
        try:
            body = json.dumps({"items": [_item_json(it) for it in chunk]}, allow_nan=False).encode()
        except (TypeError, ValueError, AttributeError) as exc:  # e.g. a NaN or an object in a reference
            return [ScoreResult(math.nan, {}, f"cannot encode the items as JSON: {exc}") for _ in chunk]
        reason = "not attempted"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self._http.post("/v1/score", content=body, headers={"content-type": "application/json"})
            except httpx.TransportError as exc:  # connect/read/write errors and timeouts: retry
                reason = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
                continue
            if resp.status_code != 200:
                reason = f"HTTP {resp.status_code}: {resp.text[:200]}"
                break
            try:
                raw = resp.json()["results"]
            except (ValueError, KeyError, TypeError):
                reason = f"malformed response: {resp.text[:200]}"
                break
            if not isinstance(raw, list) or len(raw) != len(chunk):
                reason = f"service returned {len(raw) if isinstance(raw, list) else 'no'} results for {len(chunk)} items"
                break
            return [_result(r) for r in raw]
        reason = f"{reason} (try {attempt + 1} of {self.retries + 1})"
        return [ScoreResult(math.nan, {}, reason) for _ in chunk]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._http.close()

    def __enter__(self) -> RewardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
