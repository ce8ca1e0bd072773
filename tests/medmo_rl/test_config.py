import dataclasses
import typing

import pytest

from medmo_rl import config as C
from medmo_rl.config import ConfigError, config_from_dict, load_config
from medmo_rl.run import main as run_main

RECIPES = ["configs/tiny.yaml", "configs/medmo_8b.yaml", "configs/medmo_4b.yaml"]


@pytest.mark.parametrize("path", RECIPES)
def test_recipes_load(path):
    cfg = load_config(path)
    assert cfg.rl.num_generations == 8 and cfg.rl.eps_low == 0.15 and cfg.rl.eps_high == 0.25


def test_paper_hyperparameters_in_8b():
    c = load_config("configs/medmo_8b.yaml")
    s1, s2, s3 = c.sft.stage1, c.sft.stage2, c.sft.stage3
    assert (s1.batch_size, s1.grad_accum, s1.lr, s1.max_pixels) == (10, 2, 1e-5, 768 * 768)
    assert (s2.batch_size, s2.grad_accum, s2.lr, s2.max_pixels) == (2, 8, 8e-6, 1280 * 1280)
    assert (s3.batch_size, s3.grad_accum, s3.lr) == (14, 2, 5e-6)
    assert all(s.bf16 and s.lr_scheduler == "cosine" and s.warmup_ratio == 0.1 and s.weight_decay == 0.1
               for s in (s1, s2, s3))
    rl = c.rl
    assert (rl.epochs, rl.batch_size, rl.grad_accum, rl.max_prompt_tokens, rl.max_completion_tokens) == (2, 2, 4, 2048, 1024)
    assert (rl.adam_beta1, rl.adam_beta2, rl.weight_decay, c.seed) == (0.9, 0.999, 0.1, 42)
    assert c.reward.max_completion_tokens == 1024 and c.reward.bbox.w_l1 == 5.0 and c.reward.bbox.w_giou == 2.0


def test_dotted_override_parses_yaml_values():
    c = load_config(None, ["rl.num_generations=4", "sft.stage2.lr=1e-4", "eval.benchmarks=[a, b]", "rl.dynamic_sampling=false"])
    assert c.rl.num_generations == 4 and c.sft.stage2.lr == 1e-4
    assert c.eval.benchmarks == ("a", "b") and c.rl.dynamic_sampling is False


@pytest.mark.parametrize("override, needle", [
    ("rl.num_generation=4", "'rl.num_generation'"),                 # typo'd key
    ("rlx.lr=1", "'rlx'"),                                          # unknown section
    ("rl.kl_type=k2", "rl.kl_type"),                                # bad enum value
    ("rl.num_generations=four", "rl.num_generations"),              # wrong type
    ("rl.num_generations=1", "rl.num_generations"),                 # out of range
    ("rl.eps_low=1.5", "rl.eps_low"),
    ("sft.stage1.batch_size=0", "sft.stage1.batch_size"),
    ("rollout.dtype=int8", "rollout.dtype"),
    ("rl.lr.x=1", "rl.lr"),
])
def test_bad_overrides_name_the_key(override, needle):
    with pytest.raises(ConfigError) as exc:
        load_config(None, [override])
    assert needle in str(exc.value)


def test_enum_error_lists_allowed_values():
    with pytest.raises(ConfigError, match="'none', 'k1', 'k3'"):
        config_from_dict({"rl": {"kl_type": "k2"}})


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match="allowed keys here: .*num_generations"):
        config_from_dict({"rl": {"G": 8}})


def test_configs_are_frozen():
    c = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.rl.lr = 1.0  # type: ignore[misc]
    assert c.rl.lr == load_config().rl.lr


UNBOUNDED = {"ModelConfig.tiny_seed", "DataConfig.seed", "RunConfig.seed",  # any integer is a seed
             # a reward weight may be negative, to penalise its part
             "RewardConfig.w_accuracy", "RewardConfig.w_bbox", "RewardConfig.w_tag_count", "RewardConfig.w_overlong"}


def _config_classes():
    seen, todo = [], [C.RunConfig]
    while todo:
        cls = todo.pop()
        seen.append(cls)
        todo += [t for t in typing.get_type_hints(cls).values() if dataclasses.is_dataclass(t) and t not in seen]
    return seen


def test_every_numeric_field_carries_its_own_range():
    # a new numeric field must say what it allows; nothing is checked by its name any more
    missing = []
    for cls in _config_classes():
        for name, tp in typing.get_type_hints(cls, include_extras=True).items():
            if typing.get_origin(tp) is typing.Annotated or f"{cls.__name__}.{name}" in UNBOUNDED:
                continue
            if tp in (int, float):
                missing.append(f"{cls.__name__}.{name}")
    assert not missing, missing


@pytest.mark.parametrize("override, message", [
    ("rl.eps_high=-0.1", "rl.eps_high: must be >= 0"),          # was never checked
    ("rl.num_generations=1", "at least 2 completions"),
    ("rollout.kv_cache_gib=0", "rollout.kv_cache_gib: must be > 0"),
    ("reward.bbox.lambda_fp=-1", "reward.bbox.lambda_fp: must be >= 0"),
    ("rl.adam_beta2=1.5", "rl.adam_beta2: must lie in [0, 1]"),
])
def test_range_errors_name_key_and_bound(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(None, [override])


def test_bounds_are_inclusive_where_they_say_so():
    c = load_config(None, ["rl.eps_low=0", "rl.kl_coef=0", "rl.num_generations=2", "rollout.top_p=1"])
    assert (c.rl.eps_low, c.rl.kl_coef, c.rl.num_generations, c.rollout.top_p) == (0.0, 0.0, 2, 1.0)


def test_cli_dry_run_prints_plan(capsys):
    assert run_main(["--dry-run", "rl.num_generations=4"]) == 0
    out = capsys.readouterr().out
    assert "num_generations: 4" in out and "stage4" in out and "DAPO G=4" in out


def test_cli_dry_run_prints_the_run_dir_the_job_will_use(capsys, monkeypatch, tmp_path):
    """Inside Ray's working-dir copy a relative output_dir moves to $MEDMO_OUTPUT_ROOT: --dry-run says so."""
    copy = tmp_path / "session_1" / "runtime_resources" / "working_dir_files" / "_ray_pkg_ab"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("MEDMO_OUTPUT_ROOT", str(tmp_path / "keep"))
    assert run_main(["--dry-run", "name=probe"]) == 0
    out = capsys.readouterr().out
    assert f"run directory {tmp_path / 'keep' / 'runs' / 'probe'}  (output_dir 'runs' would resolve inside" in out
    monkeypatch.chdir(tmp_path)
    assert run_main(["--dry-run", "name=probe"]) == 0
    assert f"run directory {tmp_path / 'runs' / 'probe'}\n" in capsys.readouterr().out


def test_cli_bad_override_exits_2(capsys):
    assert run_main(["--dry-run", "rl.bogus=1"]) == 2
    assert "rl.bogus" in capsys.readouterr().err


def test_overlong_limit_must_match_rollout_limit():
    with pytest.raises(ConfigError, match="reward.max_completion_tokens"):
        load_config(None, ["rl.max_completion_tokens=96"])
    c = load_config(None, ["rl.max_completion_tokens=96", "reward.max_completion_tokens=96"])
    assert c.rl.max_completion_tokens == 96
