"""bench/http_load.py, the benchmarks' load generator, against the real service: it must count
every request, and every wrong answer (HTTP status or a body its check rejects) as an error."""
import json
import sys
from pathlib import Path

from reward_testlib import VQA_YES

from medmo_rl.config import RewardConfig
from rewards.service import create_app

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from http_load import load  # noqa: E402


def _body(completion: str) -> bytes:
    return json.dumps({"items": [{"completion": completion, "num_tokens": 5, "reference": VQA_YES.to_json()}]}).encode()


def test_load_counts_requests_and_errors(run_server):
    server = run_server(create_app(RewardConfig()))
    good, wrong, bad = _body("yes"), _body("no"), b'{"items": [{"completion": 1}]}'

    def check(data: bytes) -> str | None:  # "no" scores accuracy 0: the check calls that wrong
        return None if json.loads(data)["results"][0]["parts"]["accuracy"] == 1.0 else "accuracy 0"

    latencies, errors, wall = load(server.url, "/v1/score", [good, wrong, bad], connections=3, seconds=0.5, check=check)
    assert len(latencies) >= 9 and wall >= 0.5 and all(t > 0 for t in latencies)
    n_bad = sum(e.startswith("HTTP 422") for e in errors)
    n_wrong = errors.count("accuracy 0")
    assert n_bad + n_wrong == len(errors)
    # each connection cycles through the three bodies: a third of the requests of each kind
    assert abs(n_bad - len(latencies) / 3) <= 3 and abs(n_wrong - len(latencies) / 3) <= 3
