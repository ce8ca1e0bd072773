"""The REAL service: uvicorn on a free port, spoken to over HTTP with httpx."""
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from reward_testlib import GROUNDING, MCQ, VQA_YES, ServerThread

from medmo_rl.config import RewardConfig
from rewards import score
from rewards.service import create_app

LIMIT = 64 * 1024
CFG = RewardConfig(w_tag_count=0.5)


@pytest.fixture(scope="module")
def url():
    server = ServerThread(create_app(CFG, token=None, max_body_bytes=LIMIT)).start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def http(url):
    with httpx.Client(base_url=url, timeout=30, headers={"content-type": "application/json"}) as client:
        yield client


def item(completion, ref, num_tokens=10):
    return {"completion": completion, "num_tokens": num_tokens, "reference": ref.to_json() if hasattr(ref, "to_json") else ref}


def post(url, payload, **kw):
    return httpx.post(f"{url}/v1/score", json=payload, timeout=30, **kw)


def test_results_in_order_and_equal_to_in_process_scores(url):
    refs = [GROUNDING, MCQ, VQA_YES]
    completions = ["<answer>nodule <box>[[100, 100, 500, 300]]</box></answer>", "<think>\nx\n</think>\n<answer>\nB\n</answer>",
                   "yes", "no", "<answer>A</answer>", "nodule <box>[[600, 300, 900, 600]]</box>"]
    items = [item(completions[i % 6], refs[i % 3], num_tokens=500 + 10 * i) for i in range(60)]
    resp = post(url, {"items": items})
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert len(results) == 60
    for i, r in enumerate(results):
        want = score(completions[i % 6], refs[i % 3], num_tokens=500 + 10 * i, config=CFG)
        assert r == {"total": want["total"], "parts": want["parts"], "error": None}
    assert len({r["total"] for r in results}) > 40  # overlong differs per item: the order check bites


def test_event_loop_and_worker_thread_paths_answer_alike(run_server):
    """Bodies up to inline_bytes are scored on the event loop, larger ones on the worker thread:
    the same body must get the same bytes back either way."""
    refs = [GROUNDING, MCQ, VQA_YES]
    completions = ["nodule <box>[[100, 100, 500, 300], [550, 300, 900, 600]]</box>", "B", "no", "yes",
                   "<answer>nodule <box>[[90, 110, 480, 320]]</box></answer>", "(C) No finding"]
    body = json.dumps({"items": [item(completions[i % 6], refs[i % 3], num_tokens=900 + i) for i in range(48)]})
    answers = {}
    for inline_bytes in (len(body), len(body) - 1, 0):  # loop, thread, thread
        server = run_server(create_app(CFG, inline_bytes=inline_bytes))
        resp = httpx.post(f"{server.url}/v1/score", content=body, headers={"content-type": "application/json"})
        assert resp.status_code == 200
        answers[inline_bytes] = resp.content
    assert len(set(answers.values())) == 1
    results = json.loads(answers[0])["results"]
    assert len({r["total"] for r in results}) > 10 and all(r["error"] is None for r in results)


def test_bad_item_gets_an_error_and_the_rest_are_scored(url):
    items = [item("yes", VQA_YES), item("yes", {"task": "diagnosis", "answer": "yes"}),
             item("yes", {"task": "grounding", "answer": "", "boxes": [[0, 0, 5, 5]], "labels": ["a"]}),
             item("yes", {"task": "vqa", "answer": "yes", "image_size": ["HUGE", 3]}), item("no", VQA_YES)]
    body = json.dumps({"items": items}).replace('"HUGE"', "1e999")  # valid JSON, parses to inf
    resp = httpx.post(f"{url}/v1/score", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 200
    results = resp.json()["results"]
    assert [r["total"] for r in results] == [1.0, None, None, None, 0.0]
    assert "'task'" in results[1]["error"] and "image_size" in results[2]["error"] and results[3]["error"]
    assert results[1]["parts"] == {} and results[0]["error"] is None


@pytest.mark.parametrize(
    "payload, field",
    [
        ([], "body"),
        ({"items": "x"}, "items"),
        ({}, "items"),
        ({"items": [], "extra": 1}, "extra"),
        ({"items": [5]}, "items[0]"),
        ({"items": [{"completion": "a", "num_tokens": 1}]}, "items[0].reference"),
        ({"items": [{"completion": 3, "num_tokens": 1, "reference": {}}]}, "items[0].completion"),
        ({"items": [item("a", VQA_YES), {"completion": "a", "num_tokens": -1, "reference": {}}]}, "items[1].num_tokens"),
        ({"items": [{"completion": "a", "num_tokens": True, "reference": {}}]}, "items[0].num_tokens"),
        ({"items": [{"completion": "a", "num_tokens": 1.5, "reference": {}}]}, "items[0].num_tokens"),
        ({"items": [{"completion": "a", "num_tokens": 1, "reference": "r"}]}, "items[0].reference"),
        ({"items": [{**item("a", VQA_YES), "score": 1}]}, "items[0].score"),
    ],
)
def test_schema_errors_are_422_naming_the_field(url, payload, field):
    resp = post(url, payload)
    assert resp.status_code == 422
    assert resp.json()["detail"].startswith(f"{field}:")


def test_not_json_is_422_and_not_json_type_is_415(url):
    for body in (b"{not json", b"\xff\xfe\x00", b'{"items": [NaN]}', b"[" * 100_000 + b"]" * 100_000):
        resp = httpx.post(f"{url}/v1/score", content=body[:LIMIT], headers={"content-type": "application/json"})
        assert resp.status_code == 422 and resp.json()["detail"].startswith("body:")
    resp = httpx.post(f"{url}/v1/score", content=b"items=1", headers={"content-type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415


def test_oversize_body_is_413(url):
    big = {"items": [item("x" * 1000, VQA_YES) for _ in range(80)]}
    assert post(url, big).status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(80):
            yield b" " * 1024

    resp = httpx.post(f"{url}/v1/score", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413


def test_healthz(url):
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}


def test_bearer_token(run_server):
    server = run_server(create_app(CFG, token="s3cret"))
    body = {"items": [item("yes", VQA_YES)]}
    assert post(server.url, body).status_code == 401
    assert post(server.url, body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{server.url}/metrics").status_code == 401
    ok = post(server.url, body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json()["results"][0]["total"] == 1.0
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # probes need no token


def test_metrics_count_requests_items_errors(run_server):
    server = run_server(create_app(CFG))
    post(server.url, {"items": [item("yes", VQA_YES), item("yes", {"task": "?", "answer": "a"})]})
    post(server.url, {"items": [item("no", VQA_YES)] * 3})
    post(server.url, {"items": 1})
    resp = httpx.get(f"{server.url}/metrics")
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(resp.text) for s in family.samples}
    route = ("route", "/v1/score")
    assert samples[("medmo_reward_requests_total", (route, ("status", "200")))] == 2
    assert samples[("medmo_reward_requests_total", (route, ("status", "422")))] == 1
    assert samples[("medmo_reward_items_total", (route,))] == 5
    assert samples[("medmo_reward_item_errors_total", (route,))] == 1
    assert samples[("medmo_reward_request_seconds_count", (route,))] == 3
    assert samples[("medmo_reward_request_seconds_bucket", (("le", "+Inf"), route))] == 3


json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**20), 10**20) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
record_like = st.fixed_dictionaries(
    {"task": st.sampled_from(["vqa", "grounding", "caption", "bogus"])},
    optional={"answer": json_value, "boxes": json_value, "labels": json_value, "image_size": json_value, "choices": json_value},
)
item_like = st.one_of(
    json_value,
    st.fixed_dictionaries({"completion": st.text(max_size=80) | json_value, "num_tokens": st.integers(-3, 5000) | json_value,
                           "reference": record_like | json_value}),
)
payload_like = st.one_of(json_value, st.fixed_dictionaries({"items": st.lists(item_like, max_size=5) | json_value}))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(payload_like)
def test_fuzzed_bodies_never_5xx(http, payload):
    resp = http.post("/v1/score", content=json.dumps(payload).encode())
    assert resp.status_code in (200, 413, 422), resp.text
    if resp.status_code == 200:
        results = resp.json()["results"]
        assert len(results) == len(payload["items"])
        for r in results:
            assert (r["total"] is None) == (r["error"] is not None)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_random_bytes_never_5xx(http, body):
    resp = http.post("/v1/score", content=body)
    assert resp.status_code == 422 or (resp.status_code == 200 and body.strip().startswith(b"{"))
