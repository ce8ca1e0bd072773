"""rewards.trl: TRL reward functions, unit-tested and driven by TRL's REAL GRPOTrainer."""
import math

import pytest
from reward_testlib import GROUNDING, MCQ, VQA_YES, ServerThread

from medmo_rl.config import RewardConfig
from rewards import PARTS, score
from rewards.client import RewardClient
from rewards.labels import encode_label
from rewards.service import create_app
from rewards.trl import completion_text, reward_funcs, reward_weights

CFG = RewardConfig(w_bbox=2.0, w_tag_count=0.5, max_completion_tokens=20, overlong_cache_tokens=8)
REFS = [GROUNDING, MCQ, VQA_YES, GROUNDING]
TEXTS = ["<think>\nx\n</think>\n<answer>\nnodule <box>[[100, 100, 500, 300]]</box>\n</answer>", "B", "yes", "no box"]
IDS = [[1] * 10, [1] * 14, [1] * 18, [1] * 25]  # overlong: 0, -0.25, -0.75, -1


def conversation(text):
    return [{"role": "assistant", "content": text}]


def test_completion_text_reads_strings_and_conversations():
    assert completion_text("a") == "a"
    assert completion_text(conversation("b")) == "b"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "image"}]}]) == "c"
    assert completion_text(None) == ""


@pytest.mark.parametrize("columns", ["label", "record"])
def test_each_part_equals_rewards_score(columns):
    funcs = reward_funcs(CFG)
    assert [f.__name__ for f in funcs] == list(PARTS)
    if columns == "label":
        kwargs = {"label": [encode_label(r) for r in REFS]}
    else:  # the record's own fields as dataset columns, None where a record lacks one (HF datasets)
        kwargs = {k: [r.to_json()[k] for r in REFS] for k in ("task", "answer", "boxes", "labels", "choices", "image_size")}
    completions = [conversation(t) for t in TEXTS]
    got = {f.__name__: f(["p"] * 4, completions, completion_ids=IDS, trainer_state=None, **kwargs) for f in funcs}
    want = [score(t, r, num_tokens=len(i), config=CFG) for t, r, i in zip(TEXTS, REFS, IDS)]
    for part in PARTS:
        assert got[part] == [w["parts"][part] for w in want], part
    assert got["overlong"] == [0.0, -0.25, -0.75, -1.0]
    totals = [sum(w * got[p][i] for w, p in zip(reward_weights(CFG), PARTS)) for i in range(4)]
    assert totals == pytest.approx([w["total"] for w in want], abs=1e-12)


def test_the_batch_is_scored_once_for_all_parts(monkeypatch):
    import rewards.trl as trl_mod

    calls = []
    real = trl_mod.score_items
    monkeypatch.setattr(trl_mod, "score_items", lambda items, cfg: calls.append(len(items)) or real(items, cfg))
    funcs = reward_funcs(CFG)
    completions, labels = ["yes", "no"], [encode_label(VQA_YES)] * 2
    for f in funcs:
        f(["p", "p"], completions, completion_ids=[[1], [1]], label=labels)
    assert calls == [2]
    next_batch = list(completions)  # a new batch (a new list) is scored anew
    for f in funcs:
        f(["p", "p"], next_batch, completion_ids=[[1], [1]], label=labels)
    assert calls == [2, 2]


def test_failures_are_none():
    funcs = reward_funcs(CFG)
    labels = [encode_label(VQA_YES), '{"task": "diagnosis"}', "not json"]
    for f in funcs:
        assert f(["p"] * 3, ["yes"] * 3, completion_ids=[[1]] * 3, label=labels) == [f({}, ["yes"], [[1]], label=labels[:1])[0], None, None]
    overlong = reward_funcs(CFG, parts=["overlong", "accuracy"])
    assert [f(["p"], ["yes"], label=labels[:1]) for f in overlong] == [[None], [1.0]]  # no ids: no length
    with pytest.raises(ValueError, match="unknown part 'format'"):
        reward_funcs(CFG, parts=["format"])


def test_reward_weights_follow_the_config():
    assert reward_weights(CFG) == [1.0, 2.0, 0.5, 1.0]
    assert reward_weights(CFG, parts=["bbox"]) == [2.0]


def test_through_the_http_service_equals_in_process():
    server = ServerThread(create_app(CFG)).start()
    try:
        with RewardClient(server.url, retries=0) as client:
            remote = reward_funcs(CFG, client=client)
            local = reward_funcs(CFG)
            kwargs = {"label": [encode_label(r) for r in REFS]}
            for r, lo in zip(remote, local):
                assert r(["p"] * 4, TEXTS, completion_ids=IDS, **kwargs) == lo(["p"] * 4, TEXTS, completion_ids=IDS, **kwargs)
            bad = remote[0](["p"], ["yes"], completion_ids=[[1]], label=['{"task": "vqa"}'])
            assert bad == [None]
    finally:
        server.stop()


@pytest.mark.integration
def test_grpo_trainer_logs_the_rewards_that_rewards_score_gives(tiny_model_dir, tmp_path):
    """TRL's real GRPOTrainer, 2 optimizer steps on the tiny model and synthetic grounding records."""
    import torch
    from datasets import Dataset
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from trl import GRPOConfig, GRPOTrainer

    from medmo_rl import synthetic

    rows, refs = [], {}
    for i in range(100):  # two images whose lesions are all nodules: the random model says " nodule" now and then
        image, records = synthetic.make_records(i, 0, 64, str(tmp_path / f"{i}.png"))
        ref = next((r for r in records if r.task == "grounding" and set(r.labels) == {"nodule"}), None)
        if ref is None:
            continue
        refs[encode_label(ref)] = ref
        rows.append({"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ref.prompt}]}],
                     "image": image, "label": encode_label(ref)})
        if len(rows) == 2:
            break
    seen = []  # (completions, completion_ids, labels) of each batch TRL scored

    def recording(f):
        def wrapped(prompts, completions, completion_ids=None, **columns):
            if f.__name__ == "accuracy":
                seen.append((completions, completion_ids, columns["label"]))
            return f(prompts, completions, completion_ids, **columns)
        wrapped.__name__ = f.__name__
        return wrapped

    torch.manual_seed(0)
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=8, num_generations=8,
                      max_completion_length=24, max_steps=2, logging_steps=1, report_to="none", use_cpu=True,
                      use_vllm=False, save_strategy="no", reward_weights=reward_weights(CFG), bf16=False,
                      learning_rate=1e-3, seed=0)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # A random model almost never names the lesion; a longer " nodule" embedding row (tied to the
    # output row) makes it likely wherever the hidden state leans its way, so completions differ.
    nodule = processor.tokenizer.convert_tokens_to_ids(processor.tokenizer.tokenize(" nodule"))
    assert len(nodule) == 1
    with torch.no_grad():
        model.get_input_embeddings().weight[nodule[0]] *= 3.0
    trainer = GRPOTrainer(model=model, processing_class=processor, args=args, train_dataset=Dataset.from_list(rows),
                          reward_funcs=[recording(f) for f in reward_funcs(CFG)])
    trainer.train()

    logs = [h for h in trainer.state.log_history if "reward" in h]
    assert trainer.state.global_step == 2 and len(logs) == 2 == len(seen)
    values = []
    for log, (completions, ids, labels) in zip(logs, seen):
        want = [score(completion_text(c), refs[lab], num_tokens=len(i), config=CFG)
                for c, i, lab in zip(completions, ids, labels)]
        for part in PARTS:
            mean = sum(w["parts"][part] for w in want) / len(want)
            assert log[f"rewards/{part}/mean"] == pytest.approx(mean, abs=1e-6), part
        assert log["reward"] == pytest.approx(sum(w["total"] for w in want) / len(want), abs=1e-6)
        values += [w["parts"]["accuracy"] for w in want]
    # the comparison sees more than one value: some completions name the lesion kind, most do not
    assert len(set(values)) > 1 and all(not math.isnan(v) for v in values), values
