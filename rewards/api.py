"""The reward service's wire format: one msgspec Struct per request and response body.

msgspec decodes and type-checks a body in one C pass (≈ 3× faster than `json.loads` plus the
hand-written checks it replaces), and `openapi_components()` renders the same Structs as the
JSON Schemas that `/openapi.json` publishes, so the documented schema IS the validator.

    POST /v1/score    ScoreRequest  → ScoreResponse
    POST /get_reward  RewardRequest → RewardResponse   (OpenRLHF's remote reward protocol)
    GET  /healthz     → Health;  any 4xx → ErrorBody {"detail": "field: problem"}

`decode(decoder, body)` turns msgspec's errors into `RequestError("items[3].num_tokens", "must be
an integer >= 0")`: the message names the field by its path in the body ("body" for the whole).
A `reference` is kept as raw JSON bytes (`msgspec.Raw`): the service validates each distinct
reference once (rewards.service caches them), not once per completion.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Raw, Struct

from rewards.composite import PARTS

__all__ = [
    "ErrorBody", "Health", "RequestError", "RewardRequest", "RewardResponse", "ScoreRequest", "ScoreRequestItem",
    "ScoreResponse", "ScoreResultBody", "TokenCount", "decode", "decoder", "openapi_components", "reference_is_object",
]

Reference = Annotated[Raw, Meta(
    extra_json_schema={"type": "object", "description": "a unified sample record (medmo_rl/schema.py); "
                       "id, prompt and images may be left out"})]


class TokenCount(int):
    """A JSON Schema "integer" >= 0. JSON Schema counts 3.0 as an integer, so it is accepted (as 3)
    and 3.5 is not; msgspec's own int would refuse 3.0, breaking the published schema."""


def _dec_hook(type_: type, obj: Any) -> Any:
    if type_ is TokenCount:
        if isinstance(obj, bool) or not isinstance(obj, (int, float)):
            raise TypeError(f"must be a non-negative integer, got {type(obj).__name__}")
        if obj < 0 or (isinstance(obj, float) and not obj.is_integer()):
            raise ValueError(f"must be a non-negative integer, got {obj!r:.40}")
        return TokenCount(int(obj))
    raise NotImplementedError(type_)


def _schema_hook(type_: type) -> dict[str, Any]:
    if type_ is TokenCount:
        return {"type": "integer", "minimum": 0}
    raise NotImplementedError(type_)


def decoder(struct: type[Struct]) -> msgspec.json.Decoder:
    """The body decoder of a route's request Struct."""
    return msgspec.json.Decoder(struct, dec_hook=_dec_hook)


class ScoreRequestItem(Struct, forbid_unknown_fields=True):
    completion: str  # the generated text, reasoning and answer
    num_tokens: Annotated[TokenCount, Meta(description="completion length in tokens (overlong part)")]
    reference: Reference


class ScoreRequest(Struct, forbid_unknown_fields=True):
    items: list[ScoreRequestItem]


class ScoreResultBody(Struct, forbid_unknown_fields=True, omit_defaults=False):
    total: float | None  # Σ w·part; null when error is set
    parts: dict[str, float]  # PARTS → value; {} when error is set
    error: str | None  # why this item could not be scored


class ScoreResponse(Struct, forbid_unknown_fields=True):
    results: list[ScoreResultBody]  # one per item, in item order


class RewardRequest(Struct, forbid_unknown_fields=True):
    """What OpenRLHF's `--remote_rm_url` client posts (openrlhf/utils/agent.py): three equal-length lists."""

    query: Annotated[list[str], Meta(description="prompt + response as decoded by the trainer, special tokens kept")]
    prompts: Annotated[list[str], Meta(description="the prompt of each query (a prefix of it)")]
    labels: Annotated[list[str], Meta(description="a reference record as JSON (rewards/labels.py) per query")]


class RewardResponse(Struct, forbid_unknown_fields=True):
    rewards: list[float]  # the training reward per query (0.0 for an invalid label)
    scores: list[float]  # the same numbers: OpenRLHF filters and logs on "scores"
    extra_logs: Annotated[dict[str, list[float]], Meta(
        description=f"per query: the parts ({', '.join(PARTS)}; overlong only with a tokenizer) and "
                    "invalid_label (1.0 where the label was not a valid record)")]


class Health(Struct):
    status: str


class ErrorBody(Struct):
    detail: str  # "field: problem"


class RequestError(Exception):
    """A body that breaks its envelope → HTTP 422 "field: problem"."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>.*)`)?$", re.S)
_NAMED = re.compile(r"^Object (?P<kind>missing required|contains unknown) field `(?P<name>.*)`$", re.S)
_EXPECTED = re.compile(r"^Expected `(?P<want>[^`]+)`(?P<bound>[^,]*)(?:, got `(?P<got>[^`]+)`)?$", re.S)
_TYPE_WORDS = {"object": "an object", "array": "a list", "str": "a string", "int": "an integer",
               "float": "a number", "bool": "a boolean", "null": "null"}


def _allowed(struct: type[Struct]) -> str:
    return ", ".join(struct.__struct_fields__)


def _translate(exc: msgspec.ValidationError, root: type[Struct]) -> RequestError:
    m = _AT.match(str(exc))
    msg, path = m["msg"], (m["path"] or "").lstrip(".")
    named = _NAMED.match(msg)
    if named:  # the field itself is the subject: "items[0].reference: required"
        field = f"{path}.{named['name']}" if path else named["name"]
        if named["kind"] == "missing required":
            return RequestError(field[:200], "required")
        owner = root if not path else (ScoreRequestItem if root is ScoreRequest else root)
        return RequestError(field[:200], f"unknown field; allowed: {_allowed(owner)}")
    expected = _EXPECTED.match(msg)
    if expected:
        want = _TYPE_WORDS.get(expected["want"], expected["want"])
        problem = f"must be {want}{expected['bound'].rstrip()}"
        if expected["got"]:
            problem += f", got {expected['got']}"
        if not path:  # the body is not even an object
            problem = f"must be a JSON object with {_allowed(root)}, got {expected['got']}"
        return RequestError(path or "body", problem)
    return RequestError(path or "body", msg[:200])  # e.g. _dec_hook's "must be a non-negative integer, got -1"


def decode(decoder: msgspec.json.Decoder, body: bytes) -> Any:
    """body → the decoder's Struct; RequestError naming the field on any problem (module docstring)."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise _translate(exc, decoder.type) from None
    except msgspec.DecodeError as exc:  # malformed JSON, bad UTF-8, NaN, lone surrogates
        raise RequestError("body", f"not valid JSON ({str(exc)[:120]})") from None
    except RecursionError:
        raise RequestError("body", "not valid JSON (nested too deeply)") from None


def reference_is_object(raw: Raw) -> bool:
    """A Raw value is a JSON object (msgspec.Raw accepts any value; the schema says object)."""
    return bytes(memoryview(raw)[:1]) == b"{"  # msgspec strips the whitespace around raw values


def openapi_components() -> dict[str, Any]:
    """JSON Schemas of every envelope, keyed by Struct name, refs as #/components/schemas/NAME."""
    _, components = msgspec.json.schema_components(
        [ScoreRequest, ScoreResponse, RewardRequest, RewardResponse, Health, ErrorBody],
        ref_template="#/components/schemas/{name}", schema_hook=_schema_hook,
    )
    return components
