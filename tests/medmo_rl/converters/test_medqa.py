import json

from converter_helpers import rejects_of

from medmo_rl.converters import medqa


def test_real_medqa_test_split(shared_data):
    # SOURCE.txt: 1273 questions (step1 679, step2&3 593, 1 with the original typo "stfep2&3")
    report = medqa.convert(shared_data / "medqa_usmle_4opt_test")
    assert report.rejected == [] and len(report.samples) == 1273
    assert (report.counts["meta:step1"], report.counts["meta:step2&3"], report.counts["meta:stfep2&3"]) == (679, 593, 1)
    first = report.samples[0]  # "A junior orthopaedic surgery resident ...", answer_idx B
    assert first.id == "medqa-test-00001" and first.task == "text_qa" and len(first.choices) == 4
    assert first.prompt.startswith("A junior orthopaedic surgery resident")
    assert first.answer == "B. Tell the attending that he cannot fail to disclose this mistake"
    assert first.choices[1] == "Tell the attending that he cannot fail to disclose this mistake"


def test_bad_lines_are_reported_with_line_numbers(tmp_path):
    good = {"question": "Q?", "answer": "two", "options": {"A": "one", "B": "two", "C": "three", "D": "four"},
            "meta_info": "step1", "answer_idx": "B"}
    lines = [json.dumps(good), '{"question": "cut off', json.dumps({**good, "answer": "five"}),
             json.dumps({**good, "options": {"A": "x", "B": "y"}}), "", json.dumps({**good, "answer_idx": "E"})]
    (tmp_path / "phrases_no_exclude_test.jsonl").write_text("\n".join(lines) + "\n")
    report = medqa.convert(tmp_path)
    assert [s.answer for s in report.samples] == ["B. two"]
    assert rejects_of(report, "unparseable_json")[0][0] == "phrases_no_exclude_test.jsonl:2"
    assert rejects_of(report, "answer_mismatch")[0][0] == "phrases_no_exclude_test.jsonl:3"
    assert [w for w, _ in rejects_of(report, "invalid_record")] == ["phrases_no_exclude_test.jsonl:4",
                                                                    "phrases_no_exclude_test.jsonl:6"]
    assert report.counts["questions"] == 5
