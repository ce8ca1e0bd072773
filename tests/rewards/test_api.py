"""rewards.api: the msgspec envelopes, their errors (naming the field) and their published schemas."""
import msgspec
import pytest

from rewards import api

SCORE = api.decoder(api.ScoreRequest)
REWARD = api.decoder(api.RewardRequest)


def test_a_valid_body_decodes_with_the_reference_raw():
    req = api.decode(SCORE, b'{"items": [{"completion": "a", "num_tokens": 3.0, "reference":  {"task": "vqa"}}]}')
    item = req.items[0]
    assert item.completion == "a" and item.num_tokens == 3 and isinstance(item.num_tokens, int)
    assert bytes(item.reference) == b'{"task": "vqa"}' and api.reference_is_object(item.reference)
    assert not api.reference_is_object(msgspec.Raw(b'"r"'))


@pytest.mark.parametrize("body, message", [
    (b"[]", "body: must be a JSON object with items, got array"),
    (b"{}", "items: required"),
    (b'{"items": [], "x": 1}', "x: unknown field; allowed: items"),
    (b'{"items": {}}', "items: must be a list, got object"),
    (b'{"items": [{"completion": "a", "num_tokens": 1, "reference": {}, "score": 1}]}',
     "items[0].score: unknown field; allowed: completion, num_tokens, reference"),
    (b'{"items": [{"completion": "a", "num_tokens": 2.5, "reference": {}}]}',
     "items[0].num_tokens: must be a non-negative integer, got 2.5"),
    (b'{"items": [{"completion": "a", "num_tokens": -1, "reference": {}}]}',
     "items[0].num_tokens: must be a non-negative integer, got -1"),
    (b'{"items": [{"completion": null, "num_tokens": 1, "reference": {}}]}', "items[0].completion: must be a string, got null"),
    (b"{no", "body: not valid JSON"),
    (b"[" * 50_000 + b"]" * 50_000, "body: must be a JSON object"),
    (b'{"items": [{"completion": "a", "num_tokens": 1, "reference": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001 + b"]}",
     "body: not valid JSON (nested too deeply)"),
])
def test_score_request_errors_name_the_field(body, message):
    with pytest.raises(api.RequestError) as info:
        api.decode(SCORE, body)
    assert str(info.value).startswith(message), str(info.value)


def test_reward_request_errors_name_the_field():
    with pytest.raises(api.RequestError, match=r"^labels\[1\]: must be a string, got int"):
        api.decode(REWARD, b'{"query": ["a", "b"], "prompts": ["", ""], "labels": ["{}", 5]}')
    with pytest.raises(api.RequestError, match=r"^prompts: required"):
        api.decode(REWARD, b'{"query": [], "labels": []}')


def test_schemas_are_the_structs():
    schemas = api.openapi_components()
    assert set(schemas) >= {"ScoreRequest", "ScoreRequestItem", "ScoreResponse", "ScoreResultBody", "RewardRequest",
                            "RewardResponse", "Health", "ErrorBody"}
    assert schemas["ScoreRequestItem"]["required"] == ["completion", "num_tokens", "reference"]
    assert schemas["ScoreRequestItem"]["properties"]["reference"]["type"] == "object"
    assert schemas["RewardResponse"]["properties"]["extra_logs"]["additionalProperties"] == {
        "type": "array", "items": {"type": "number"}}
    result = schemas["ScoreResultBody"]["properties"]
    assert result["total"] == {"anyOf": [{"type": "number"}, {"type": "null"}]}
    # every response the service encodes decodes back through its own Struct
    body = msgspec.json.encode(api.ScoreResponse([api.ScoreResultBody(1.5, {"accuracy": 1.0}, None)]))
    assert msgspec.json.decode(body, type=api.ScoreResponse).results[0].total == 1.5
