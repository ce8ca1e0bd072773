"""Configs are data: frozen dataclasses (the ONLY home of defaults), loaded from one YAML per recipe.

    cfg = load_config("configs/tiny.yaml", overrides=["rl.num_generations=4"])

Unknown keys and bad values raise `ConfigError` naming the dotted key and what is allowed. A
numeric field's allowed range is part of its type (`lr: NonNegFloat`, `eps_low: UnitFloat`), so
each field carries its own constraint.
Overrides are `dotted.key=value`, the value parsed as YAML (so `1e-5`, `true`, `[a, b]` work).
No torch/ray imports: the reward service and every stage read these.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Range:
    """The values a numeric field allows: lo ≤ v ≤ hi (lo < v when `lo_open`); None = unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    why: str = ""  # appended to the error, when the bound has a reason worth saying

    def check(self, value: float, key: str) -> None:
        low_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        if low_ok and (self.hi is None or value <= self.hi):
            return
        if self.hi is None:
            want = f"must be {'>' if self.lo_open else '>='} {self.lo:g}"
        else:
            want = f"must lie in [{self.lo:g}, {self.hi:g}]"
        raise ConfigError(f"{key}: {want}, got {value!r}" + (f" ({self.why})" if self.why else ""))


PositiveInt = Annotated[int, Range(0, lo_open=True)]
NonNegInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, lo_open=True)]
NonNegFloat = Annotated[float, Range(0)]
UnitFloat = Annotated[float, Range(0, 1)]
GroupSize = Annotated[int, Range(2, why="GRPO needs at least 2 completions per prompt")]


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    path: str = ""  # HF checkpoint dir (e.g. Qwen3-VL-8B-Instruct); "" → build the offline tiny model
    tiny_seed: int = 0  # seed of the tiny model's random weights
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


@dataclass(frozen=True)
class DataConfig:
    synthetic_train: NonNegInt = 4000  # synthetic records generated for training (tiny recipe)
    synthetic_eval: NonNegInt = 200  # held-out synthetic records for evaluation
    synthetic_image_px: PositiveInt = 64  # side of the square synthetic images
    # order of a kind's boxes in the grounding answer: "reading" (top-to-bottom, left-to-right) or
    # "annotation" (the order the lesions were drawn in — arbitrary, as in real annotation files)
    synthetic_box_order: Literal["reading", "annotation"] = "reading"
    seed: int = 0


@dataclass(frozen=True)
class SFTStageConfig:
    enabled: bool = True
    mixture: dict[str, float] = field(default_factory=dict)  # dataset name or JSONL path → weight
    answer_format: Literal["plain", "think_answer"] = "plain"  # see medmo_rl/prompts.py
    batch_size: PositiveInt = 16  # per optimizer micro-step, summed over workers
    grad_accum: PositiveInt = 1
    lr: NonNegFloat = 1e-3
    lr_scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: UnitFloat = 0.1
    epochs: NonNegFloat = 1.0
    max_steps: NonNegInt = 0  # optimizer steps; 0 → derived from epochs
    max_pixels: PositiveInt = 768 * 768  # images are resized to at most this many pixels
    max_seq_len: PositiveInt = 2048  # longer examples are skipped and counted
    weight_decay: NonNegFloat = 0.1
    adam_beta1: UnitFloat = 0.9
    adam_beta2: UnitFloat = 0.999
    grad_clip: NonNegFloat = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = False
    save_every_steps: NonNegInt = 500
    keep_checkpoints: PositiveInt = 2  # Ray Train checkpoints kept (more: e.g. to eval a learning curve)
    log_every_steps: PositiveInt = 10


@dataclass(frozen=True)
class SFTConfig:
    num_workers: PositiveInt = 2  # Ray Train workers
    cpus_per_worker: NonNegFloat = 1.0
    use_gpu: bool = False
    loader_workers: NonNegInt = 1  # DataLoader processes per Ray Train worker collating steps ahead; 0 → in the step
    prefetch_steps: PositiveInt = 4  # steps each loader process keeps ready (memory: their batches); 2: tiny waits 6 %
    stage1: SFTStageConfig = field(default_factory=SFTStageConfig)
    stage2: SFTStageConfig = field(default_factory=SFTStageConfig)
    stage3: SFTStageConfig = field(default_factory=SFTStageConfig)


@dataclass(frozen=True)
class RolloutConfig:
    num_workers: PositiveInt = 1  # vLLM rollout actors; scaled independently of the learners
    cpus_per_worker: NonNegFloat = 1.0
    gpus_per_worker: NonNegFloat = 0.0
    tensor_parallel_size: PositiveInt = 1
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    max_model_len: PositiveInt = 4096
    kv_cache_gib: PositiveFloat = 1.0  # KV cache on CPU (kv_cache_memory_bytes); GPUs use gpu_memory_utilization
    gpu_memory_utilization: UnitFloat = 0.5
    max_num_seqs: PositiveInt = 64
    max_images_per_prompt: PositiveInt = 1
    # vLLM's processed-image cache per engine (mm_processor_cache_gb; vLLM's default is 4). RL sends
    # an image once per epoch, as ONE request for all G completions, so the cache never hits and
    # only grows: measured +14.9 MiB per 100 calls of 4 new 64-px images, up to 4 GiB per actor
    mm_cache_gib: NonNegFloat = 0.0
    max_pixels: PositiveInt = 1280 * 1280
    temperature: NonNegFloat = 1.0
    top_p: UnitFloat = 1.0
    probe_tolerance: UnitFloat = 1e-4  # max |Δ logprob| between engine and learner after a weight push
    enforce_eager: bool = True
    # a worker not serving after this long stops the pool with an error naming what it reserves
    # (e.g. a resize the cluster has no CPUs for), instead of waiting for Ray to place it forever
    start_timeout_s: PositiveFloat = 600.0


@dataclass(frozen=True)
class BBoxRewardConfig:
    w_l1: NonNegFloat = 5.0  # App. A.1 pair-score weight
    w_giou: NonNegFloat = 2.0
    lambda_fn: NonNegFloat = 0.0  # App. A.1: penalties default 0
    lambda_fp: NonNegFloat = 0.0
    square: bool = False  # Sec. 3.5.1 squares the clipped reward; App. eq. 12 does not


@dataclass(frozen=True)
class RewardConfig:
    w_accuracy: float = 1.0  # weights of the four parts in the total (App. B.4 names them)
    w_bbox: float = 1.0
    w_tag_count: float = 1.0
    w_overlong: float = 1.0
    overlong_cache_tokens: NonNegInt = 512  # DAPO's L_cache
    max_completion_tokens: PositiveInt = 1024  # DAPO's L_max (kept equal to rl.max_completion_tokens)
    bbox: BBoxRewardConfig = field(default_factory=BBoxRewardConfig)
    service: Literal["uvicorn", "serve", "url"] = "uvicorn"  # how the RL stage gets its reward service
    url: str = ""  # used when service == "url"
    replicas: PositiveInt = 1
    cpus_per_replica: NonNegFloat = 0.25
    timeout_s: NonNegFloat = 30.0
    retries: NonNegInt = 5  # backoff 0.5 · 2^k s: 15.5 s in all, enough for a restarted service (driver/reward_service.py)
    max_concurrency: PositiveInt = 8
    max_failed_fraction: UnitFloat = 0.5  # stop the run when more scoring fails than this


@dataclass(frozen=True)
class RLConfig:
    enabled: bool = True
    num_generations: GroupSize = 8  # G
    eps_low: UnitFloat = 0.15  # DAPO clip-higher, lower bound (paper: "epsilon")
    eps_high: NonNegFloat = 0.25  # upper bound (paper: "epsilon_high")
    epochs: NonNegFloat = 2.0
    max_steps: NonNegInt = 0  # 0 → derived from epochs
    batch_size: PositiveInt = 2  # completions per micro-batch per learner (TRL's per_device_train_batch_size)
    grad_accum: PositiveInt = 4  # only sizes the derived prompts_per_step; the learner steps once per mini-batch
    mini_batches: PositiveInt = 1  # optimizer steps per rollout batch (>1: later ones are off-policy, clipping bites)
    prompts_per_step: NonNegInt = 0  # 0 → batch_size · grad_accum · mini_batches · num_learners / num_generations
    lr: NonNegFloat = 1e-6
    lr_scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_ratio: UnitFloat = 0.1
    weight_decay: NonNegFloat = 0.1
    adam_beta1: UnitFloat = 0.9
    adam_beta2: UnitFloat = 0.999
    grad_clip: NonNegFloat = 1.0
    freeze_vision: bool = False  # train the language model only (the vision tower keeps its SFT weights)
    max_prompt_tokens: PositiveInt = 2048
    max_completion_tokens: PositiveInt = 1024
    mask_truncated: bool = False
    scale_advantages: bool = True  # eq. 5's ÷ group std; False: Dr. GRPO's A = R − mean (see algos.group_advantages)
    kl_type: Literal["none", "k1", "k3"] = "none"
    kl_coef: NonNegFloat = 0.0  # β
    dynamic_sampling: bool = True
    max_extra_rounds: NonNegInt = 2  # extra generation rounds to refill dropped zero-std groups
    # asynchronous RL (rl_loop.Rollouts): the rollout of steps s+1 … s+k runs while step s trains;
    # 0 = strictly on-policy, one phase after another
    max_staleness: NonNegInt = 0
    # decoupled PPO's behaviour weight π_prox/π_behav is truncated here (algos.behaviour_weights)
    max_is_ratio: Annotated[float, Range(1, why="a cap below 1 would shrink on-policy tokens too")] = 2.0
    num_learners: PositiveInt = 2
    cpus_per_learner: NonNegFloat = 1.0
    use_gpu: bool = False
    bf16: bool = False
    checkpoint_every: PositiveInt = 10
    # a learner actor that dies (or a step that outlasts learner_timeout_s): the driver rebuilds the
    # learner group from the last RL checkpoint and replays from there, at most this often per run
    max_learner_restarts: NonNegInt = 3
    learner_timeout_s: PositiveFloat = 1800.0  # longest one learner call (a step, a weight export, a save) may take
    monitor_every: NonNegInt = 10  # steps between resource samples (rl/resources.jsonl + .png); 0: off
    train_set: str = "synthetic_grounding"  # dataset name or JSONL path of RL prompts
    answer_format: Literal["plain", "think_answer"] = "think_answer"


@dataclass(frozen=True)
class ClusterConfig:
    address: str = "auto"  # "auto": RAY_ADDRESS (set by ray job submit) if set, else a new local cluster; or an address
    num_cpus: PositiveInt = 8  # logical CPUs of a LOCAL cluster: more than 2 cores, so learners, rollout and rewards all fit
    allow_local: bool = True
    # a stage reserving more CPUs than the cluster has: scale all its CPU reservations by supply/demand
    # (Ray CPUs are logical; medmo_rl/driver/fit.py has the rule); false: stop with an error instead
    fractional_cpus: bool = True
    rollout_headroom: NonNegInt = 1  # spare rollout workers the RL fit leaves CPU room for (runtime resize)
    autoscaler_wait_s: NonNegFloat = 0.0  # > 0: an autoscaler can add nodes; wait this long for a stage to fit
    lost_after_s: NonNegFloat = 30.0  # the driver exits (code 75) when the GCS is unreachable this long; 0: never


@dataclass(frozen=True)
class EvalConfig:
    enabled: bool = True
    benchmarks: tuple[str, ...] = ("synthetic_eval_grounding",)
    limit: NonNegInt = 200
    models: tuple[str, ...] = ("base", "sft", "rl")  # which of the run's models to evaluate


@dataclass(frozen=True)
class RunConfig:
    name: str = "tiny"
    output_dir: str = "runs"
    # a run directory with less free space stops the run before any stage (checkpoints need room;
    # a full disk mid-run would lose the step being written)
    min_free_gib: NonNegFloat = 1.0
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if typing.get_origin(tp) is Annotated:
        value = _coerce(value, typing.get_args(tp)[0], key)
        for bound in tp.__metadata__:
            if isinstance(bound, Range):
                bound.check(value, key)
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {', '.join(f.name for f in dataclasses.fields(tp))}")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {tp}")


def _build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown key {dotted!r}; allowed keys here: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], dotted)
    cfg = cls(**kwargs)
    _check_relations(cfg, prefix)
    return cfg


def _check_relations(cfg: Any, prefix: str) -> None:
    """Constraints between fields (a field's own range is in its type)."""
    if isinstance(cfg, RunConfig) and cfg.reward.max_completion_tokens != cfg.rl.max_completion_tokens:
        raise ConfigError(
            f"reward.max_completion_tokens ({cfg.reward.max_completion_tokens}) must equal rl.max_completion_tokens "
            f"({cfg.rl.max_completion_tokens}): the overlong punishment's L_max is the rollout's length limit")
    if isinstance(cfg, RewardConfig) and cfg.overlong_cache_tokens > cfg.max_completion_tokens:
        raise ConfigError(f"{prefix}.overlong_cache_tokens: must not exceed max_completion_tokens")


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is a value, not a section")
        node = nxt
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {key!r}: value {raw!r} is not valid YAML ({exc})") from exc
    return key, value


def config_from_dict(data: dict[str, Any] | None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    tree: dict[str, Any] = dict(data or {})
    for ov in overrides:
        key, value = parse_override(ov)
        _set_dotted(tree, key, value)
    if not isinstance(tree, dict):
        raise ConfigError("the config must be a mapping at the top level")
    return _build(RunConfig, tree)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a recipe YAML (None → the embedded tiny default) and apply dotted overrides."""
    path = Path(path) if path else default_config_path()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return config_from_dict(data, overrides)


def default_config_path() -> Path:
    # editable install: the recipes live at the repository root, beside medmo_rl/
    return Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (tuples → lists) for writing the resolved config next to a run's artefacts."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
