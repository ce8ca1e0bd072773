"""One learner rank: the policy model, AdamW + warm-up/cosine, and DAPO updates on `TrainItem`s.

A plain class — constructible and testable without Ray; `medmo_rl/driver/learner_group.py` wraps N of
them as Ray actors joined by torch.distributed: DDP over gloo on CPU, FSDP2 over NCCL on GPUs
(medmo_rl/parallel.py; the FSDP2 path is written but has not run on a GPU yet). Under FSDP2 every
forward is collective, so weights, probe, save and load run on all ranks (LearnerGroup does so).

One `train_step` = one rollout batch (this rank's shard), which LearnerGroup has cut into
`rl.mini_batches` mini-batches, each ONE optimizer step over micro-batches of `rl.batch_size` items
(however many the shard holds: `rl.grad_accum` only sizes the rollout batch, rl_loop.prompts_per_step):
  1. each distinct image of the shard goes through the image processor once, and each micro-batch's
     inputs are built once for all the forwards below;
  2. old log-probs recomputed under the current weights (no grad) — π_old of eq. 4; the engine's
     (vLLM) log-probs are compared with them (≈1e-6 apart in fp32) and the gap reported. Items
     the rollout generated with older weights (rl.max_staleness ≥ 1: TrainItem.staleness > 0)
     are weighted by decoupled PPO's truncated π_old/π_engine (algos.behaviour_weights);
  3. per mini-batch, forward + backward of every micro-batch (plus a reference forward when the KL
     term is on), then the optimizer step. Each micro-batch loss is divided by the global token
     count of its mini-batch (all ranks), then ×world_size because DDP averages gradients over ranks;
  4. the token sums of all micro-batches (`algos.LossStats`, accumulated on the device) become
     per-token means once: one all-gather across ranks, one copy to the host → `LearnStats`.
A forward computes logits only from the shortest prompt's last position on (`logits_to_keep`), and
one log-softmax gives both the log-probs and the entropy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist
from transformers import AutoModelForImageTextToText, AutoProcessor

from medmo_rl.algos import LossStats, behaviour_weights, dapo_policy_loss, right_pad, token_logprobs
from medmo_rl.checkpoint import load_train_state, load_weights, restore_train_state, save_checkpoint
from medmo_rl.config import ModelConfig, RLConfig
from medmo_rl.parallel import adamw, full_state_dict, grad_sync, optimizer_step, wrap_for_training
from medmo_rl.probe import hf_probe_logprobs
from medmo_rl.prompts import load_image
from medmo_rl.records import TrainItem
from medmo_rl.resources import release_free_heap
from medmo_rl.schedules import lr_multiplier


def split_even(seq: list, parts: int) -> list[list]:
    """Cut into `parts` contiguous chunks whose sizes differ by at most one."""
    k, r = divmod(len(seq), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + k + (1 if i < r else 0)
        out.append(seq[start:end])
        start = end
    return out


@dataclass(frozen=True)
class LearnStats:
    """One `train_step` over the whole global batch (all ranks), as metrics.jsonl carries it
    (`learn/<field>`). Token statistics are per-token means of the `algos.LossStats` sums of the
    same name."""

    loss: float  # the DAPO loss (eq. 3, token-level), summed over the step's optimizer steps
    tokens: float  # unmasked completion tokens
    clip_low: float  # fraction of tokens where the low clip is active (A < 0, r < 1 − eps_low)
    clip_high: float  # fraction where the high clip is active (A > 0, r > 1 + eps_high)
    ratio: float  # mean r_t = π_θ / π_old
    ratio_max: float
    kl: float  # mean per-token KL estimate to the reference (0 without one)
    entropy: float  # mean entropy of π_θ at the completion positions, nats
    engine_logprob_mismatch: float  # mean |log π_old − log π_engine| over on-policy tokens (fp32: ≈1e-6; larger: inputs differ)
    engine_logprob_mismatch_max: float
    grad_norm: float  # before clipping, of the last optimizer step
    lr: float  # the learning rate the last optimizer step used
    is_weight_mean: float  # mean behaviour weight w_t (algos.behaviour_weights); exactly 1 on-policy
    is_truncated_frac: float  # fraction of tokens whose w_t hit rl.max_is_ratio


def learn_stats(ranks: torch.Tensor, lr: float) -> LearnStats:
    """Rows of `_pack` (one per rank, [W, 14]) → per-token means over all of them.

        clip_low = Σ_ranks clip_low / Σ_ranks tokens   (likewise clip_high, ratio, kl, entropy,
                                                        is_weight, is_truncated)
        engine_logprob_mismatch = Σ |Δ| / Σ compared tokens;   the maxima: max over ranks
    grad_norm is the same on every rank (gradients are all-reduced before it is taken)."""
    sums, maxima = torch.stack([ranks.sum(0), ranks.amax(0)]).tolist()  # one copy to the host
    loss, tokens, clip_low, clip_high, ratio, kl, entropy, gap, gap_tokens, is_weight, is_truncated = sums[:11]
    ratio_max, gap_max, grad_norm = maxima[11:]
    n = max(tokens, 1.0)
    return LearnStats(loss=loss, tokens=tokens, clip_low=clip_low / n, clip_high=clip_high / n, ratio=ratio / n,
                      ratio_max=ratio_max, kl=kl / n, entropy=entropy / n,
                      engine_logprob_mismatch=gap / max(gap_tokens, 1.0), engine_logprob_mismatch_max=gap_max,
                      grad_norm=grad_norm, lr=lr, is_weight_mean=is_weight / n, is_truncated_frac=is_truncated / n)


def _pack(s: LossStats, gap: torch.Tensor, gap_tokens: torch.Tensor, gap_max: torch.Tensor,
          grad_norm: torch.Tensor) -> torch.Tensor:
    """[14] on the device: the sums first, then the maxima, in `learn_stats`' order."""
    return torch.stack([t.to(torch.float64) for t in (s.loss, s.tokens, s.clip_low, s.clip_high, s.ratio, s.kl,
                                                        s.entropy, gap, gap_tokens, s.is_weight, s.is_truncated,
                                                        s.ratio_max, gap_max, grad_norm)])


@dataclass(frozen=True)
class _MicroBatch:
    """One micro-batch, built once per train_step and fed to every forward of it (on the device)."""

    inputs: dict[str, torch.Tensor]  # right-padded input_ids/attention_mask/mm_token_type_ids [B, L] + images
    keep: int  # logits_to_keep: positions from the shortest prompt's last token to the end
    index: torch.Tensor  # [B, T] which kept position predicts completion token t of row b
    completion: torch.Tensor  # [B, T] sampled token ids (0 past a row's end)
    mask: torch.Tensor  # [B, T] 1.0 on tokens that count (loss_mask), 0.0 on padding
    advantages: torch.Tensor  # [B]
    engine: torch.Tensor  # [B, T] the engine's log-probs
    engine_mask: torch.Tensor  # [B, T] bool: counted and the engine reported a log-prob
    off_policy: torch.Tensor  # [B, T] bool: engine_mask and generated by older weights (TrainItem.staleness > 0)


class Learner:
    def __init__(self, model_dir: str, rl: RLConfig, *, total_steps: int, max_pixels: int, rank: int = 0,
                 world_size: int = 1, seed: int = 42, num_threads: int = 1, dtype: str = ModelConfig.dtype):
        torch.set_num_threads(max(1, num_threads))
        torch.manual_seed(seed + rank)
        self.rl, self.rank, self.world_size, self.max_pixels = rl, rank, world_size, max_pixels
        self.total_steps = max(1, total_steps)
        self.device = torch.device("cuda", torch.cuda.current_device()) if rl.use_gpu and torch.cuda.is_available() else torch.device("cpu")
        # The weights load in model.dtype. FSDP2 computes in bf16 through its mixed-precision policy
        # when rl.bf16; elsewhere rl.bf16 makes bf16 the weights' dtype.
        fsdp = self.device.type == "cuda" and world_size > 1
        weights_dtype = torch.bfloat16 if rl.bf16 and not fsdp else getattr(torch, dtype)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=weights_dtype).to(self.device)
        self.model.train()
        if rl.freeze_vision:
            self.model.model.visual.requires_grad_(False)
        self.image_token_id = self.model.config.image_token_id
        c = self.model.config
        # A sampled vision token in a completion would make HF splice image features there
        # ("Image features and image tokens do not match"); vLLM embedded it as text. The rollout
        # bans them; this keeps the learner safe whatever engine produced the tokens.
        self.vision_ids = {i for i in (c.image_token_id, getattr(c, "video_token_id", None),
                                       getattr(c, "vision_start_token_id", None), getattr(c, "vision_end_token_id", None))
                           if i is not None}
        self.pad_id = self.processor.tokenizer.pad_token_id or 0
        self.ref_model = None
        if rl.kl_type != "none" and rl.kl_coef > 0:  # frozen, unsharded: bf16 of an 8B model is 16 GB per GPU
            ref_dtype = torch.bfloat16 if rl.bf16 else getattr(torch, dtype)
            self.ref_model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=ref_dtype).to(self.device).eval()
            self.ref_model.requires_grad_(False)
        self.train_model: torch.nn.Module = self.model  # what forward/backward go through (DDP / FSDP2 wrapper)
        if world_size == 1:
            self._make_optimizer()

    def _make_optimizer(self) -> None:
        """After wrapping: FSDP2 turns the parameters into DTensors, and the optimizer must hold those."""
        rl = self.rl
        self.optimizer = adamw(self.model, lr=rl.lr, betas=(rl.adam_beta1, rl.adam_beta2), weight_decay=rl.weight_decay)
        warmup = int(round(rl.warmup_ratio * self.total_steps * rl.mini_batches))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_multiplier(rl.lr_scheduler, s, self.total_steps * rl.mini_batches, warmup))

    # -- wiring ----------------------------------------------------------------------------
    def init_distributed(self, master_addr: str, master_port: int) -> int:
        if self.world_size > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{master_addr}:{master_port}",
                                    rank=self.rank, world_size=self.world_size)
            # The vision tower's deepstack path may leave parameters unused on text-only batches.
            self.train_model = wrap_for_training(self.model, self.device, bf16=self.rl.bf16, find_unused_parameters=True)
            self._make_optimizer()
        return self.rank

    # -- inputs ----------------------------------------------------------------------------
    def _images(self, items: Sequence[TrainItem]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each distinct image → (its patches [n, D], its image_grid_thw [1, 3]): one image-processor
        call per train_step, though the G completions of a prompt and three forwards all use it."""
        paths = list(dict.fromkeys(p for it in items for p in it.sample.images))
        if not paths:
            return {}
        pix = self.processor.image_processor(images=[load_image(p, self.max_pixels) for p in paths],
                                             return_tensors="pt")
        grids = pix["image_grid_thw"]
        patches = torch.split(pix["pixel_values"], grids.prod(-1).tolist())
        return {p: (x, grids[i : i + 1]) for i, (p, x) in enumerate(zip(paths, patches))}

    def _micro_batch(self, items: Sequence[TrainItem], images: dict[str, tuple[torch.Tensor, torch.Tensor]]
                     ) -> _MicroBatch:
        """Right-padded rows prompt + completion; completion token t of row b sits at input position P_b + t."""
        prompt_lens = torch.tensor([len(it.prompt_token_ids) for it in items])
        completion_lens = torch.tensor([len(it.completion_token_ids) for it in items])
        ids = right_pad([list(it.prompt_token_ids) + [self.pad_id if tok in self.vision_ids else tok
                                                       for tok in it.completion_token_ids] for it in items], self.pad_id)
        attention = (torch.arange(ids.shape[1])[None] < (prompt_lens + completion_lens)[:, None]).long()
        inputs = {"input_ids": ids, "attention_mask": attention, "mm_token_type_ids": (ids == self.image_token_id).long()}
        pics = [images[p] for it in items for p in it.sample.images]
        if pics:
            inputs["pixel_values"] = torch.cat([x for x, _ in pics])
            inputs["image_grid_thw"] = torch.cat([g for _, g in pics])
        T = max(1, max(len(it.completion_token_ids) for it in items))
        t = torch.arange(T)[None]
        first = int(prompt_lens.min())
        keep = ids.shape[1] - first + 1
        # logits_to_keep keeps positions first−1 … L−1; position P_b − 1 + t predicts completion token t
        index = (prompt_lens[:, None] - first + t).clamp(max=keep - 1)
        counted = torch.tensor([it.loss_mask for it in items])[:, None] & (t < completion_lens[:, None])
        has_engine = t < torch.tensor([len(it.engine_logprobs) for it in items])[:, None]
        d = self.device
        return _MicroBatch(inputs={k: v.to(d) for k, v in inputs.items()}, keep=keep, index=index.to(d),
                           completion=right_pad([it.completion_token_ids for it in items], 0, width=T).to(d),
                           mask=counted.float().to(d), advantages=torch.tensor([it.advantage for it in items]).to(d),
                           engine=right_pad([it.engine_logprobs for it in items], 0.0, width=T,
                                            dtype=torch.float32).to(d),
                           engine_mask=(counted & has_engine).to(d),
                           off_policy=(counted & has_engine & torch.tensor([it.staleness > 0 for it in items])[:, None]
                                       ).to(d))

    def _micro_batches(self, mini_batches: Sequence[Sequence[TrainItem]]) -> list[list[_MicroBatch]]:
        images = self._images([it for mb in mini_batches for it in mb])
        size = self.rl.batch_size
        return [[self._micro_batch(mb[i : i + size], images) for i in range(0, len(mb), size)] for mb in mini_batches]

    def _logprobs(self, model: torch.nn.Module, mb: _MicroBatch, *, with_entropy: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, T] log-probs of the completion tokens (and their entropies)."""
        logits = model(**mb.inputs, logits_to_keep=mb.keep).logits  # [B, keep, V]
        picked = logits.gather(1, mb.index[:, :, None].expand(-1, -1, logits.shape[-1]))  # [B, T, V]
        return token_logprobs(picked, mb.completion, with_entropy=with_entropy)

    @torch.no_grad()
    def logprobs(self, items: Sequence[TrainItem]) -> list[list[float]]:
        """Per-token log-probs of each item's completion under the current weights (for inspection)."""
        out: list[list[float]] = []
        (micro,) = self._micro_batches([items])
        for i, mb in zip(range(0, len(items), self.rl.batch_size), micro):
            lp = self._logprobs(self.model, mb)[0].cpu()
            out += [lp[b, : len(it.completion_token_ids)].tolist() for b, it in enumerate(items[i : i + self.rl.batch_size])]
        return out

    # -- the update ------------------------------------------------------------------------
    def train_step(self, mini_batches: Sequence[Sequence[TrainItem]], mini_batch_tokens: Sequence[int]) -> LearnStats:
        """DAPO update: one optimizer step per mini-batch of this rank's shard.

        `mini_batch_tokens[k]`: unmasked tokens of mini-batch k over ALL ranks. Every rank must get
        the same number of micro-batches (DDP all-reduces in backward); `LearnerGroup` pads shards
        with masked-out items to make it so. Collective when world_size > 1 (the stats' all-gather).
        """
        stats = self._update(mini_batches, mini_batch_tokens)
        # once the step's tensors are freed: their sizes follow the completion lengths, and the holes
        # they leave in the glibc heap stayed resident (a rank grew ~6 MiB per 100 steps without this)
        release_free_heap()
        return stats

    def _update(self, mini_batches: Sequence[Sequence[TrainItem]], mini_batch_tokens: Sequence[int]) -> LearnStats:
        rl = self.rl
        batches = self._micro_batches(mini_batches)
        with torch.no_grad():  # π_old; as many forwards on every rank as it has micro-batches (FSDP2)
            olds = [[self._logprobs(self.model, mb)[0] for mb in mbs] for mbs in batches]
            # on-policy tokens only: there the gap detects inputs that differ; stale ones differ by design
            gaps = [torch.where(mb.engine_mask & ~mb.off_policy, (old - mb.engine).abs(), 0.0)
                    for mbs, mb_olds in zip(batches, olds) for mb, old in zip(mbs, mb_olds)]
            gap_tokens = sum((mb.engine_mask & ~mb.off_policy).sum() for mbs in batches for mb in mbs)
        model = self.train_model
        acc: LossStats | None = None
        for mbs, mb_olds, n_global in zip(batches, olds, mini_batch_tokens):
            for j, (mb, old) in enumerate(zip(mbs, mb_olds)):
                with grad_sync(model, sync=j == len(mbs) - 1):
                    lp, entropy = self._logprobs(model, mb, with_entropy=True)
                    ref = None
                    if self.ref_model is not None:
                        with torch.no_grad():
                            ref, _ = self._logprobs(self.ref_model, mb)
                    w = capped = None
                    if bool(mb.off_policy.any()):  # decoupled PPO: `old` is the proximal policy
                        w, capped = behaviour_weights(old, mb.engine, mb.off_policy, max_ratio=rl.max_is_ratio)
                    loss, st = dapo_policy_loss(lp, old, mb.advantages, mb.mask, eps_low=rl.eps_low,
                                                eps_high=rl.eps_high, num_tokens=float(max(1, n_global)),
                                                ref_logprobs=ref, kl_type=rl.kl_type, kl_coef=rl.kl_coef,
                                                entropy=entropy, is_weights=w, is_truncated=capped)
                    (loss * self.world_size).backward()
                acc = st if acc is None else acc + st
            grad_norm, lr = optimizer_step(self.model, self.optimizer, self.scheduler, rl.grad_clip)
        packed = _pack(acc, sum(g.sum() for g in gaps), gap_tokens, torch.stack([g.amax() for g in gaps]).amax(),
                       grad_norm)
        ranks = [packed]
        if self.world_size > 1:  # one collective: sums and maxima could not share one all-reduce
            ranks = [torch.empty_like(packed) for _ in range(self.world_size)]
            dist.all_gather(ranks, packed)
        return learn_stats(torch.stack(ranks), lr)

    # -- weights and checkpoints -----------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """HF-named CPU tensors of the policy (what vLLM reloads). Under FSDP2: collective, rank 0 gets them."""
        return full_state_dict(self.model)

    def probe_logprobs(self, probe: Any) -> list[float]:
        self.model.eval()
        try:
            return hf_probe_logprobs(self.model, self.processor, probe)
        finally:
            self.model.train()

    def save(self, path: str) -> None:
        """HF model + processor (loadable by transformers and vLLM) and the optimizer/scheduler/RNG
        state (medmo_rl/checkpoint.py). Under FSDP2: collective (every rank gathers), rank 0 writes."""
        save_checkpoint(self.model, self.optimizer, self.scheduler, self.processor, path, progress={},
                        is_writer=self.rank == 0)

    def load(self, path: str) -> None:
        load_weights(self.model, path)
        restore_train_state(self.model, self.optimizer, self.scheduler, load_train_state(path))
