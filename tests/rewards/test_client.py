"""RewardClient against REAL servers (uvicorn in a thread): order, retries, failures as NaN."""
import math
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from reward_testlib import GROUNDING, MCQ, VQA_YES, free_port

from medmo_rl.config import RewardConfig
from medmo_rl.schema import Sample
from rewards import score
from rewards.client import RewardClient, ScoreItem, ScoreResult
from rewards.service import create_app, score_request

CFG = RewardConfig()


def items(n):
    refs = [GROUNDING, MCQ, VQA_YES]
    texts = ["<answer>nodule <box>[[100, 100, 500, 300]]</box></answer>", "<answer>B</answer>", "yes", "no"]
    return [ScoreItem(texts[i % 4], 500 + 9 * i, refs[i % 3]) for i in range(n)]


def test_scores_in_order_across_chunks(run_server):
    server = run_server(create_app(CFG))
    batch = items(23)
    with RewardClient(server.url, chunk_size=4, max_concurrency=3) as client:
        results = client.score(batch)
        assert client.failed_items == 0
    assert all(isinstance(r, ScoreResult) for r in results)
    want = [score(it.completion, it.reference, num_tokens=it.num_tokens, config=CFG) for it in batch]
    assert [(r.total, r.parts, r.error) for r in results] == [(w["total"], w["parts"], None) for w in want]
    assert len({r.total for r in results}) > 15


def test_retries_until_the_server_comes_up(run_server):
    port = free_port()
    starter = threading.Timer(0.6, lambda: run_server(create_app(CFG), port=port))
    starter.start()
    t0 = time.monotonic()
    with RewardClient(f"http://127.0.0.1:{port}", retries=6, backoff_s=0.1, connect_timeout_s=1.0) as client:
        results = client.score(items(5))  # tries at 0, 0.1, 0.3, 0.7, 1.5 s ... the server is up at ~0.6 s
        assert client.failed_items == 0
    starter.join()
    assert all(r.error is None and math.isfinite(r.total) for r in results)
    assert time.monotonic() - t0 >= 0.6


def test_permanent_failure_is_nan_and_counted():
    port = free_port()  # nothing listens here
    with RewardClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01) as client:
        results = client.score(items(7))
        assert client.failed_items == 7
        client.score(items(2))
        assert client.failed_items == 9
    assert all(math.isnan(r.total) and r.parts == {} for r in results)
    assert "ConnectError" in results[0].error and "try 3 of 3" in results[0].error


def test_5xx_is_retried(run_server):
    calls = []
    app = FastAPI()

    @app.post("/v1/score")
    async def flaky(request: Request):
        calls.append(1)
        if len(calls) <= 2:
            return JSONResponse({"detail": "overloaded"}, status_code=503)
        results, _ = score_request(await request.body(), CFG)
        return {"results": results}

    server = run_server(app)
    with RewardClient(server.url, retries=3, backoff_s=0.01) as client:
        results = client.score(items(3))
    assert len(calls) == 3 and [r.error for r in results] == [None] * 3


def test_4xx_is_final_and_server_item_errors_are_nan(run_server, monkeypatch):
    monkeypatch.delenv("MEDMO_REWARD_TOKEN", raising=False)
    server = run_server(create_app(CFG, token="t"))
    with RewardClient(server.url, retries=3, backoff_s=5.0) as client:  # a retry would take ≥ 5 s
        t0 = time.monotonic()
        results = client.score(items(2))
        assert time.monotonic() - t0 < 4 and client.failed_items == 2
    assert all(math.isnan(r.total) and r.error.startswith("HTTP 401") for r in results)

    monkeypatch.setenv("MEDMO_REWARD_TOKEN", "t")  # the client's default token, like the server's
    with RewardClient(server.url) as client:
        assert client.score(items(1))[0].error is None

    bad = Sample(id="b", task="grounding", prompt="p", answer="", images=("i.png",), boxes=((1, 1, 2, 2),), labels=("a",))
    with RewardClient(server.url, token="t") as client:  # bad: no image_size → the server rejects the reference
        results = client.score([ScoreItem("yes", 3, VQA_YES), ScoreItem("yes", 3, bad)])
        assert client.failed_items == 1
    assert results[0].total == 1.0 and math.isnan(results[1].total) and "image_size" in results[1].error


def test_unencodable_item_is_nan_not_an_exception():
    with RewardClient(f"http://127.0.0.1:{free_port()}", retries=0) as client:
        results = client.score([ScoreItem("x", 3, {"task": "vqa", "answer": math.nan})])
        assert client.failed_items == 1
    assert math.isnan(results[0].total) and "JSON" in results[0].error
