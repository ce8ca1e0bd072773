import json

from converter_helpers import rejects_of

from medmo_rl.converters import pubmedqa


def test_real_pubmedqa_official_test_split(shared_data):
    # SOURCE.txt: 1000 items (yes 552 / no 338 / maybe 110); test 500 (yes 276 / no 169 / maybe 55)
    src = shared_data / "pubmedqa_pqal"
    test = pubmedqa.convert(src)
    assert test.rejected == [] and len(test.samples) == 500
    assert (test.counts["answer:yes"], test.counts["answer:no"], test.counts["answer:maybe"]) == (276, 169, 55)
    full = pubmedqa.convert(src, split="all")
    assert len(full.samples) == 1000
    assert (full.counts["answer:yes"], full.counts["answer:no"], full.counts["answer:maybe"]) == (552, 338, 110)
    train = pubmedqa.convert(src, split="train")
    assert len(train.samples) == 500 and not {s.id for s in train.samples} & {s.id for s in test.samples}
    s = test.samples[0]
    assert s.task == "text_qa" and s.choices == ("yes", "no", "maybe") and s.images == ()
    assert s.prompt.startswith("Context:\n") and s.prompt.endswith("\nAnswer with yes, no or maybe.")


def test_label_mismatch_and_bad_answers_are_reported(tmp_path):
    item = {"QUESTION": "Does it?", "CONTEXTS": ["c1", "c2"], "LABELS": ["BACKGROUND", "RESULTS"]}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ori_pqal.json").write_text(json.dumps({
        "1": {**item, "final_decision": "yes"},
        "2": {**item, "final_decision": "no"},       # test file says "yes"
        "3": {**item, "final_decision": "perhaps"},  # not a PubMedQA label
    }))
    (tmp_path / "data" / "test_ground_truth.json").write_text(json.dumps({"1": "yes", "2": "yes", "9": "no"}))
    report = pubmedqa.convert(tmp_path, split="all")
    assert [s.id for s in report.samples] == ["pubmedqa-1"]
    assert report.samples[0].prompt == ("Context:\nBACKGROUND: c1\nRESULTS: c2\nQuestion: Does it?\n"
                                        "Answer with yes, no or maybe.")
    assert rejects_of(report, "label_mismatch")[0][0] == "ori_pqal.json#2"
    assert rejects_of(report, "invalid_record")[0][0] == "ori_pqal.json#3"
    assert rejects_of(report, "unknown_pmid")[0][0] == "test_ground_truth.json#9"
    assert len(report.rejected) == 3
