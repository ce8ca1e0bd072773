"""One vLLM engine that turns prompts into groups of G completions and takes verified weight pushes.

A plain class (no Ray): `rollout/actor.py` wraps it for Ray, `rollout/pool.py` runs N of them.

    worker = RolloutWorker(model_dir, RolloutConfig(max_model_len=1024))
    groups = worker.generate(samples, SamplingSpec(n=8, max_tokens=256), "think_answer")
    worker.update_weights(1, learner.state_dict(), expected_probe=hf_probe_logprobs(...))

Per-request failures (missing/corrupt image, too many images, prompt longer than max_model_len)
come back as `Group(error=...)` naming the sample id; the rest of the batch is served. A failure
of the engine itself raises `RolloutEngineError` and the worker refuses further work (the pool
replaces it). A weight push whose probe disagrees with the learner raises `WeightSyncError`, and
the worker refuses to generate until a push verifies — never silently stale weights.

Completion logprobs are vLLM's raw model logprobs of the sampled tokens (before temperature/top-p).
"""
from __future__ import annotations

import gc
import logging
import os
import time
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from medmo_rl import prompts
from medmo_rl.config import RolloutConfig
from medmo_rl.probe import Probe, make_probe, max_abs_diff
from medmo_rl.records import Completion, Group, SamplingSpec
from medmo_rl.schema import Sample

log = logging.getLogger(__name__)

FINISH_REASONS = ("stop", "length")  # anything else vLLM reports becomes "error"


class RolloutEngineError(RuntimeError):
    """The vLLM engine failed as a whole; this worker cannot serve any more requests."""


class WeightSyncError(RuntimeError):
    """The engine's weights are not the learner's: a failed load or a probe mismatch."""


@dataclass(frozen=True)
class WeightUpdate:
    version: int
    load_s: float  # pushing tensors into the engine + cache resets
    probe_s: float  # recomputing the probe
    probe_max_abs_diff: float | None  # max |Δ logprob| vs the learner; None when no expectation given


@dataclass(frozen=True)
class WorkerHealth:
    pid: int
    weight_version: int
    engine_ok: bool
    sync_error: str | None  # set while the last weight push failed verification
    prompts_served: int


class OncePerMessage(logging.Filter):
    """Lets each distinct message through once: vLLM-CPU swaps torch.set_num_threads for a function
    that logs the same warning on every call (hundreds per eval, from the image processor)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


# vLLM loggers that repeat one message per call or per weight push (3 lines per reload for layers
# that have no weights): each distinct message once per process
_REPEATING_LOGGERS = ("vllm.v1.worker.cpu_worker", "vllm.model_executor.model_loader.reload.layerwise")
# warns at import that its own kernels are "already registered" (~20 lines): not the user's concern
_IMPORT_NOISE_LOGGERS = ("vllm.triton_utils.dispatcher",)


def quiet_engine_logs() -> None:
    """Install the filters before vLLM is imported: some of its warnings come at import and start-up."""
    for name in _REPEATING_LOGGERS:
        if not any(isinstance(f, OncePerMessage) for f in logging.getLogger(name).filters):
            logging.getLogger(name).addFilter(OncePerMessage())
    for name in _IMPORT_NOISE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def request_seed(seed: int, sample_id: str) -> int:
    """Per-prompt seed, independent of which worker serves the prompt (vLLM adds 0..G-1 per child)."""
    return (seed + zlib.crc32(sample_id.encode())) % (2**31 - 2**16)


class RolloutWorker:
    def __init__(self, model_dir: str | os.PathLike, config: RolloutConfig, *, seed: int = 0):
        if not os.path.isfile(os.path.join(model_dir, "config.json")):
            raise FileNotFoundError(f"rollout model {str(model_dir)!r}: no config.json (not a HF checkpoint folder)")
        quiet_engine_logs()
        from transformers import AutoProcessor
        from vllm import LLM
        from vllm.platforms import current_platform

        self.config = config
        self.model_dir = str(model_dir)
        self.on_gpu = current_platform.is_cuda_alike()
        engine_args: dict[str, Any] = dict(
            model=self.model_dir, dtype=config.dtype, max_model_len=config.max_model_len,
            max_num_seqs=config.max_num_seqs, limit_mm_per_prompt={"image": config.max_images_per_prompt},
            enforce_eager=config.enforce_eager, seed=seed, mm_processor_cache_gb=config.mm_cache_gib,
        )
        if self.on_gpu:
            engine_args.update(gpu_memory_utilization=config.gpu_memory_utilization,
                               tensor_parallel_size=config.tensor_parallel_size)
        else:
            # VLLM_CPU_KVCACHE_SPACE (whole GiB), when set in the environment, overrides this.
            engine_args.update(kv_cache_memory_bytes=int(config.kv_cache_gib * 2**30))
            # A seeded request whose prefill is split over steps kills vLLM-CPU ("CPU Generator
            # does not use offset" when the partial step's sampled token is discarded): prefill
            # each prompt whole, which needs a step budget of at least one full-length prompt.
            engine_args.update(enable_chunked_prefill=False, max_num_batched_tokens=max(4096, config.max_model_len))
        self.llm = LLM(**engine_args)
        self.processor = AutoProcessor.from_pretrained(self.model_dir)
        self.probe: Probe = make_probe(self.processor)
        # A sampled vision token is text to vLLM but an image slot to transformers: the learner
        # could not score it. Ban them (logit_bias acts after the raw logprobs we report).
        tok = self.processor.tokenizer
        self.banned_ids = sorted({i for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
                                  if (i := tok.convert_tokens_to_ids(t)) is not None and i != tok.unk_token_id})
        self.weight_version = 0
        self._dead: str | None = None
        self._sync_error: str | None = None
        self._prompts_served = 0

    # -- generation ------------------------------------------------------------------------------
    def generate(self, samples: list[Sample], sampling: SamplingSpec, answer_format: str = "plain") -> list[Group]:
        """One Group per sample, in order: G = sampling.n completions, or `error` set."""
        from vllm import RequestOutput
        from vllm.v1.engine.exceptions import EngineDeadError

        if answer_format not in prompts.ANSWER_FORMATS:
            raise ValueError(f"answer_format {answer_format!r}; allowed: {', '.join(prompts.ANSWER_FORMATS)}")
        self._check_usable()
        groups: list[Group | None] = [None] * len(samples)
        enqueued: list[int] = []
        for i, sample in enumerate(samples):
            try:
                engine_input = self._engine_input(sample, answer_format)
                n_prompt = self._prompt_tokens(engine_input) if sampling.max_prompt_tokens else 0
            except (OSError, ValueError) as exc:
                groups[i] = _error_group(sample, f"sample {sample.id!r}: {exc}")
                continue
            if sampling.max_prompt_tokens and n_prompt > sampling.max_prompt_tokens:
                groups[i] = Group(sample=sample, prompt_token_ids=(), completions=(), prompt_too_long=True,
                                  error=f"sample {sample.id!r}: prompt of {n_prompt} tokens > max_prompt_tokens="
                                        f"{sampling.max_prompt_tokens}")
                continue
            try:
                self.llm.enqueue([engine_input], self._sampling_params(sampling, sample.id), use_tqdm=False)
            except EngineDeadError:
                raise
            except Exception as exc:  # vLLM validates (length, image count, processing) before admitting it
                groups[i] = _error_group(sample, f"sample {sample.id!r}: rejected by the engine: {exc}")
                continue
            enqueued.append(i)
        try:
            outputs = self.llm.wait_for_completion(RequestOutput, use_tqdm=False) if enqueued else []
        except Exception as exc:
            self._dead = f"{type(exc).__name__}: {exc}"
            ids = [samples[i].id for i in enqueued]
            raise RolloutEngineError(f"vLLM engine failed while generating {len(ids)} samples "
                                     f"({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}): {self._dead}") from exc
        if len(outputs) != len(enqueued):
            self._dead = f"{len(outputs)} outputs for {len(enqueued)} requests"
            raise RolloutEngineError(f"vLLM engine returned {self._dead}")
        for i, out in zip(enqueued, outputs):  # outputs are sorted by request id = enqueue order
            groups[i] = self._group(samples[i], out)
        self._prompts_served += len(samples)
        return groups  # type: ignore[return-value]

    def _engine_input(self, sample: Sample, answer_format: str) -> dict[str, Any]:
        if len(sample.images) > self.config.max_images_per_prompt:
            raise ValueError(f"{len(sample.images)} images; this engine takes at most "
                             f"{self.config.max_images_per_prompt} per prompt (rollout.max_images_per_prompt)")
        text = prompts.render_prompt(self.processor, sample, answer_format=answer_format)
        engine_input: dict[str, Any] = {"prompt": text}
        if sample.images:
            images = []
            for path in sample.images:
                try:
                    images.append(prompts.load_image(path, self.config.max_pixels))
                except Exception as exc:  # missing, truncated, not an image, decompression bomb, ...
                    raise OSError(f"cannot read image {path}: {exc}") from exc
            engine_input["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
        return engine_input

    def _prompt_tokens(self, engine_input: dict[str, Any]) -> int:
        """The prompt's length as the model sees it, image pads expanded: what generating would cost
        (one extra pass of the HF processor, far cheaper than G completions of a prompt we refuse)."""
        images = engine_input.get("multi_modal_data", {}).get("image")
        images = None if images is None else images if isinstance(images, list) else [images]
        return len(self.processor(text=[engine_input["prompt"]], images=images)["input_ids"][0])

    def _sampling_params(self, spec: SamplingSpec, sample_id: str):
        from vllm import SamplingParams

        return SamplingParams(
            n=spec.n, max_tokens=spec.max_tokens, temperature=spec.temperature, top_p=spec.top_p, logprobs=0,
            seed=None if spec.seed is None else request_seed(spec.seed, sample_id),
            logit_bias={i: -100.0 for i in self.banned_ids} or None,
        )

    def _group(self, sample: Sample, out: Any) -> Group:
        completions = []
        for j, c in enumerate(out.outputs):
            finish = c.finish_reason if c.finish_reason in FINISH_REASONS else "error"
            logprobs = tuple(step[tok].logprob for step, tok in zip(c.logprobs or [], c.token_ids))
            completions.append(Completion(
                sample_id=sample.id, index=j, text=c.text, token_ids=tuple(c.token_ids), logprobs=logprobs,
                finish_reason=finish, weight_version=self.weight_version,
                error=None if finish != "error" else f"sample {sample.id!r}: vLLM finished with {c.finish_reason!r}",
            ))
        return Group(sample=sample, prompt_token_ids=tuple(out.prompt_token_ids), completions=tuple(completions))

    # -- weights ---------------------------------------------------------------------------------
    def update_weights(
        self,
        version: int,
        weights: Mapping[str, Any] | Iterable[tuple[str, Any]],
        expected_probe: list[float] | None = None,
    ) -> WeightUpdate:
        """Load HF-named CPU tensors into the running engine, then verify with the probe.

        `weights` is consumed once, lazily (a generator over buckets keeps memory flat). With
        `expected_probe` (learner's `hf_probe_logprobs` for the same weights) a max |Δ| above
        `probe_tolerance` raises WeightSyncError and the worker refuses work until a push verifies.
        """
        if self._dead:
            raise RolloutEngineError(f"engine is dead ({self._dead}); cannot load weights v{version}")
        named = iter(weights.items()) if isinstance(weights, Mapping) else iter(weights)
        t0 = time.perf_counter()
        self._sync_error = f"weights v{version} are being loaded"
        try:
            self._load_weights(named)
        except Exception as exc:
            self._sync_error = f"loading weights v{version} failed: {type(exc).__name__}: {exc}"
            raise WeightSyncError(self._sync_error) from exc
        self.weight_version = version
        t1 = time.perf_counter()
        try:
            engine = self.probe_logprobs()
        except WeightSyncError as exc:
            self._sync_error = str(exc)
            raise
        except Exception as exc:
            self._dead = f"{type(exc).__name__}: {exc}"
            raise RolloutEngineError(f"vLLM engine failed on the probe after loading weights v{version}: "
                                     f"{self._dead}") from exc
        t2 = time.perf_counter()
        diff = None if expected_probe is None else max_abs_diff(engine, list(expected_probe))
        if diff is not None and not diff <= self.config.probe_tolerance:
            self._sync_error = (f"weights v{version}: probe logprobs differ from the learner's by {diff:.3g} "
                                f"> probe_tolerance {self.config.probe_tolerance:g} (engine holds other weights)")
            raise WeightSyncError(self._sync_error)
        self._sync_error = None
        return WeightUpdate(version=version, load_s=t1 - t0, probe_s=t2 - t1, probe_max_abs_diff=diff)

    def _load_weights(self, named: Iterable[tuple[str, Any]]) -> None:
        from vllm.v1.executor.uniproc_executor import UniProcExecutor

        executor = getattr(self.llm.llm_engine, "model_executor", None)
        if isinstance(executor, UniProcExecutor):
            # In-process: the iterator is handed over by reference. `load_weights` would fail on
            # CPU after start-up (prepacked linears); reload_weights re-runs the weight processing.
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named, "is_checkpoint_format": True})
        else:
            # Multi-process engine (e.g. tensor parallel on GPUs; untested here): tensors cannot
            # travel as RPC arguments, so go through a safetensors file vLLM's loader shards itself.
            self._reload_from_file(named)
        # Stale vision embeddings / KV blocks from the old weights: without these resets the next
        # image request dies with "Encoder cache miss".
        self.llm.llm_engine.reset_encoder_cache()
        if not self.llm.reset_prefix_cache():
            raise RuntimeError("prefix cache could not be reset (requests still running)")

    def _reload_from_file(self, named: Iterable[tuple[str, Any]]) -> None:
        import tempfile

        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="rollout-weights-") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in named}, os.path.join(tmp, "model.safetensors"))
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": tmp, "is_checkpoint_format": True})

    def probe_logprobs(self) -> list[float]:
        """The engine's log-probabilities of the probe sequence (see medmo_rl/probe.py), [T-1]."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        (out,) = self.llm.generate([{"prompt": self.probe.text, "multi_modal_data": {"image": self.probe.image}}],
                                   params, use_tqdm=False)
        if tuple(out.prompt_token_ids) != self.probe.token_ids:
            raise WeightSyncError("vLLM tokenises the probe differently from the HF processor "
                                  f"({len(out.prompt_token_ids)} vs {len(self.probe.token_ids)} tokens)")
        ids = out.prompt_token_ids
        return [step[tok].logprob for step, tok in zip(out.prompt_logprobs[1:], ids[1:])]

    # -- lifecycle -------------------------------------------------------------------------------
    def health(self) -> WorkerHealth:
        return WorkerHealth(pid=os.getpid(), weight_version=self.weight_version, engine_ok=self._dead is None,
                            sync_error=self._sync_error, prompts_served=self._prompts_served)

    def shutdown(self) -> None:
        """Stop the engine and free its memory (call before the process is killed)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        finally:
            self.llm = None
            self._dead = self._dead or "shut down"
            gc.collect()

    def _check_usable(self) -> None:
        if self._dead:
            raise RolloutEngineError(f"engine is dead ({self._dead})")
        if self._sync_error:
            raise WeightSyncError(f"refusing to generate: {self._sync_error}")


def _error_group(sample: Sample, error: str) -> Group:
    return Group(sample=sample, prompt_token_ids=(), completions=(), error=error)
