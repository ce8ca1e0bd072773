"""POST /get_reward, OpenRLHF's remote reward protocol, on the REAL service over HTTP."""
import httpx
import pytest
from reward_testlib import GROUNDING, MCQ, VQA_YES, ServerThread

from medmo_rl.config import RewardConfig
from rewards import score
from rewards.labels import encode_label
from rewards.openrlhf import response_text, strip_control_tokens
from rewards.service import create_app

CFG = RewardConfig(w_bbox=2.0, max_completion_tokens=20, overlong_cache_tokens=10)
PROMPT = ("<|im_start|>system\nThink first.<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>"
          "Locate the nodules.<|im_end|>\n<|im_start|>assistant\n")
ANSWER = "<think>\nsmall\n</think>\n<answer>\nnodule <box>[[100, 100, 500, 300]]</box>\n</answer>"


def test_response_is_the_query_after_its_prompt():
    assert response_text(PROMPT + ANSWER + "<|im_end|>", PROMPT) == ANSWER + "<|im_end|>"
    # the processor expanded the image pad the prompt text holds once
    expanded = PROMPT.replace("<|image_pad|>", "<|image_pad|>" * 64)
    assert response_text(expanded + "yes<|im_end|>", PROMPT) == "yes<|im_end|>"
    # a prompt the decoded query does not reproduce: the text after the assistant header
    assert response_text(PROMPT + "no", "something else") == "no"
    with pytest.raises(ValueError, match="not a prefix"):
        response_text("plain text", "other")
    assert strip_control_tokens("<|vision_start|><|image_pad|>yes<|im_end|><|endoftext|>") == "yes"
    assert strip_control_tokens(ANSWER) == ANSWER  # <think>/<answer>/<box> are text to the rewards


@pytest.fixture(scope="module")
def url():
    server = ServerThread(create_app(CFG)).start()
    yield server.url
    server.stop()


def post(url, payload):
    return httpx.post(f"{url}/get_reward", json=payload, timeout=30)


def test_batch_scores_equal_rewards_score_without_overlong(url):
    refs = [GROUNDING, MCQ, VQA_YES]
    answers = [ANSWER, "<answer>B</answer>", "no"]
    queries = [PROMPT.replace("<|image_pad|>", "<|image_pad|>" * 4) + a + "<|im_end|>" for a in answers]
    resp = post(url, {"query": queries, "prompts": [PROMPT] * 3, "labels": [encode_label(r) for r in refs]})
    assert resp.status_code == 200
    body = resp.json()
    nocfg = RewardConfig(w_bbox=2.0, w_overlong=0.0, max_completion_tokens=20, overlong_cache_tokens=10)
    want = [score(a, r, num_tokens=0, config=nocfg) for a, r in zip(answers, refs)]
    assert body["rewards"] == body["scores"] == [w["total"] for w in want]
    assert body["rewards"][0] == 1.0 + 2.0 * want[0]["parts"]["bbox"] + 1.0  # accuracy, 2·bbox, tag_count
    assert set(body["extra_logs"]) == {"accuracy", "bbox", "tag_count", "invalid_label", "unscored"}
    for part in ("accuracy", "bbox", "tag_count"):
        assert body["extra_logs"][part] == [w["parts"][part] for w in want]
    assert body["extra_logs"]["invalid_label"] == [0.0] * 3


def test_an_invalid_label_scores_zero_and_is_counted(url):
    labels = [encode_label(VQA_YES), '{"task": "vqa"}', "not json", encode_label(VQA_YES)]
    resp = post(url, {"query": [PROMPT + "yes"] * 3 + ["unrelated"], "prompts": [PROMPT] * 4, "labels": labels})
    assert resp.status_code == 200
    body = resp.json()
    assert body["rewards"] == [1.0, 0.0, 0.0, 0.0]
    assert body["extra_logs"]["invalid_label"] == [0.0, 1.0, 1.0, 0.0]
    assert body["extra_logs"]["unscored"] == [0.0, 1.0, 1.0, 1.0]  # the last: its response cannot be found
    assert body["extra_logs"]["accuracy"] == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("payload, field", [
    ({"query": ["a"], "prompts": ["a", "b"], "labels": ["{}"]}, "prompts"),
    ({"query": ["a"], "prompts": ["a"], "labels": []}, "labels"),
    ({"query": ["a"], "prompts": ["a"]}, "labels"),
    ({"query": "a", "prompts": ["a"], "labels": ["{}"]}, "query"),
    ({"query": ["a"], "prompts": ["a"], "labels": [{"task": "vqa"}]}, "labels[0]"),
    ({"query": [], "prompts": [], "labels": [], "datasource": []}, "datasource"),
])
def test_envelope_errors_are_422_naming_the_field(url, payload, field):
    resp = post(url, payload)
    assert resp.status_code == 422 and resp.json()["detail"].startswith(f"{field}:"), resp.text


def test_with_a_tokenizer_the_overlong_part_counts_response_tokens(tiny_model_dir, run_server):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    server = run_server(create_app(CFG, tokenizer=str(tiny_model_dir)))
    tok = processor.tokenizer
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Locate the nodules."}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # what OpenRLHF sends: prompt ids with the processor's image pads + response ids, decoded with specials
    from PIL import Image

    prompt_ids = processor(text=[prompt], images=[Image.new("RGB", (64, 64))], return_tensors="pt")["input_ids"][0].tolist()
    answers = ["<answer>\nnodule <box>[[100, 100, 500, 300]]</box>\n</answer>", "nodule " * 12]
    queries, lengths = [], []
    for a in answers:
        response_ids = tok(a + "<|im_end|>", add_special_tokens=False)["input_ids"]
        queries.append(tok.decode(prompt_ids + response_ids, skip_special_tokens=False))
        lengths.append(len(response_ids))
    assert queries[0].count("<|image_pad|>") == 4 and prompt.count("<|image_pad|>") == 1
    resp = httpx.post(f"{server.url}/get_reward", json={"query": queries, "prompts": [prompt] * 2,
                                                        "labels": [encode_label(GROUNDING)] * 2})
    body = resp.json()
    want = [score(a, GROUNDING, num_tokens=n, config=CFG) for a, n in zip(answers, lengths)]
    assert body["rewards"] == [w["total"] for w in want]
    assert body["extra_logs"]["overlong"] == [w["parts"]["overlong"] for w in want]
    assert body["extra_logs"]["overlong"][1] < 0 <= lengths[1] - 10  # the long one is punished
