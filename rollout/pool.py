"""RolloutPool — the N vLLM rollout actors the RL loop talks to.

    pool = RolloutPool(model_dir, cfg.rollout)                   # cfg.rollout.num_workers actors
    groups = pool.generate(samples, SamplingSpec(n=8), "think_answer")   # one Group per sample, in order
    pool.push_weights(step, learner_state_dict, expected_probe)  # all actors, verified by the probe
    pool.resize(4); pool.health(); pool.shutdown()

Work is cut into calls of `prompts_per_call` prompts (one vLLM request per prompt with n=G, so a
group never splits) and handed to whichever actor has fewer than `max_in_flight` calls queued:
actors scale independently of the learners and a slow actor takes less. An actor that dies (kill
-9 included) or whose engine fails is replaced, the replacement gets the current weights and
version before any work, and the dead actor's unfinished calls go back to the queue — every
prompt comes back exactly once. A call whose actor died twice is retried prompt by prompt; a
prompt whose actor dies once more comes back as `Group(error=...)` instead of looping forever.

Weights travel through Ray's object store: `push_weights` puts them ONCE, as buckets of about
`bucket_bytes` (`push_weight_refs` takes buckets someone else put), and every actor streams the
buckets into its engine (rollout/actor.py).

`generate`, `push_weights` and `health` run one at a time; `add_worker`, `remove_worker` and
`resize` may be called from another thread while `generate` runs (a new actor joins the batch
once started; a removed one finishes its queued calls first).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from medmo_rl.config import RolloutConfig
from medmo_rl.faults import FaultLog
from medmo_rl.records import Group, SamplingSpec
from medmo_rl.schema import Sample
from medmo_rl.weights import weight_buckets
from rollout.actor import RolloutActor, actor_env
from rollout.worker import RolloutEngineError, WeightSyncError, WeightUpdate, WorkerHealth

DEAD = (RayActorError, RolloutEngineError)  # the actor, or its engine, is gone: replace it


class RolloutError(RuntimeError):
    """The pool cannot make progress (e.g. actors keep dying)."""


@dataclass
class _Slot:
    slot_id: int
    actor: Any
    ready_ref: Any | None  # health() queued behind start-up (+ weight push); None once serving
    push_ref: Any | None = None  # the start-up weight push, checked when ready
    in_flight_refs: set = field(default_factory=set)
    draining: bool = False  # removed: takes no new calls, stopped when its queue is empty
    pid: int | None = None
    last_error: str = ""  # why its last actor died
    died: tuple[float, str] | None = None  # (monotonic time, what died) until the replacement serves

    @property
    def serving(self) -> bool:
        return self.ready_ref is None and not self.draining


@dataclass
class _Chunk:
    indices: tuple[int, ...]  # positions in the caller's sample list
    deaths: int = 0  # actors that died while holding this call


@dataclass(frozen=True)
class _Weights:
    version: int
    bucket_refs: list  # object-store refs of the current weights' buckets ([] → the checkpoint's)
    expected_probe: list[float] | None


class RolloutPool:
    def __init__(
        self,
        model_dir: str,
        config: RolloutConfig,
        *,
        prompts_per_call: int | None = None,  # None → max_num_seqs // n: one call fills the engine
        max_in_flight: int = 2,  # calls queued per actor, so it never idles between calls
        max_restarts: int = 4,  # actor replacements allowed within one generate() call
        seed: int = 0,
        faults: FaultLog | None = None,  # where replaced actors are recorded (medmo_rl/faults.py)
    ):
        if config.num_workers < 1:
            raise ValueError("rollout.num_workers must be ≥ 1")
        self.model_dir, self.config, self.seed = str(model_dir), config, seed
        self.prompts_per_call, self.max_in_flight, self.max_restarts = prompts_per_call, max_in_flight, max_restarts
        self.restarts = 0  # actors replaced after dying, over the pool's life
        self.faults = faults if faults is not None else FaultLog()
        self._remote_actor = ray.remote(RolloutActor).options(
            num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
            runtime_env={"env_vars": actor_env(config)}, max_restarts=0,
        )
        self._weights = _Weights(version=0, bucket_refs=[], expected_probe=None)
        self._slots: list[_Slot] = []
        self._next_slot_id = 0
        self._lock = threading.RLock()  # guards _slots, _weights
        self._phase = threading.Lock()  # generate / push_weights / health: one at a time
        with self._lock:
            self._slots = [self._new_slot() for _ in range(config.num_workers)]
        try:
            for slot in list(self._slots):
                self._await_start(slot)
        except BaseException:
            self.shutdown()
            raise

    # -- public API ------------------------------------------------------------------------------
    @property
    def num_workers(self) -> int:
        with self._lock:
            return sum(not s.draining for s in self._slots)

    @property
    def weight_version(self) -> int:
        return self._weights.version

    def generate(self, samples: list[Sample], sampling: SamplingSpec, answer_format: str = "plain") -> list[Group]:
        """One Group (G = sampling.n completions, or `error`) per sample, in input order.

        Raises WeightSyncError if an actor holds unverified weights (after a failed push) and
        RolloutError if more than `max_restarts` actors die during the call.
        """
        with self._phase:
            per_call = self.prompts_per_call or max(1, self.config.max_num_seqs // max(1, sampling.n))
            pending = deque(_Chunk(tuple(range(i, min(i + per_call, len(samples)))))
                            for i in range(0, len(samples), per_call))
            results: list[Group | None] = [None] * len(samples)
            chunk_refs: dict[Any, tuple[_Slot, Any, _Chunk]] = {}
            restarts_at_start = self.restarts
            try:
                while pending or chunk_refs:
                    starting_refs = self._dispatch(pending, chunk_refs, samples, sampling, answer_format)
                    wait_refs = list(chunk_refs) + list(starting_refs)
                    if not wait_refs:
                        raise RolloutError("no rollout worker is serving")
                    done_refs, _ = ray.wait(wait_refs, num_returns=1, timeout=1.0)
                    for ref in done_refs:
                        if ref in chunk_refs:
                            self._collect(ref, chunk_refs, pending, results, samples)
                        else:
                            self._finish_start(starting_refs[ref])
                    if self.restarts - restarts_at_start > self.max_restarts:
                        raise RolloutError(f"{self.restarts - restarts_at_start} rollout actors died in one "
                                           f"generate() call (max_restarts={self.max_restarts})")
            finally:
                with self._lock:
                    for ref, (slot, _, _) in chunk_refs.items():
                        slot.in_flight_refs.discard(ref)
                self._stop_drained()
            return results  # type: ignore[return-value]

    def push_weights(
        self,
        version: int,
        weights: Mapping[str, Any] | Iterable[tuple[str, Any]],
        expected_probe: list[float] | None = None,
        *,
        bucket_bytes: int = 256 * 2**20,
    ) -> list[WeightUpdate]:
        """Load HF-named weights into every actor and verify each against `expected_probe`.

        Raises WeightSyncError naming every actor that failed; those refuse to generate until a
        later push verifies. The pushed weights become the ones new and restarted actors get.
        """
        bucket_refs = [ray.put(bucket) for bucket in weight_buckets(weights, bucket_bytes)]
        return self.push_weight_refs(version, bucket_refs, expected_probe)

    def push_weight_refs(self, version: int, bucket_refs: list[Any], expected_probe: list[float] | None = None,
                         *, rewind: bool = False) -> list[WeightUpdate]:
        """`push_weights` for buckets already in the object store (put by the learner itself:
        medmo_rl/learner_group.py), which saves the driver a copy of every push.

        Versions never go backwards (a restarted actor must not rejoin at weights older than the
        ones the others hold); the same version again is allowed (a resumed run re-pushes it).
        `rewind=True` is the one exception: a run that went back to a checkpoint (its learners were
        rebuilt from it) pushes that checkpoint's older version to every actor at once."""
        if version < self._weights.version and not rewind:
            raise ValueError(f"weight push v{version} after v{self._weights.version}: versions never go backwards")
        with self._phase:
            with self._lock:
                self._weights = _Weights(version=version, bucket_refs=bucket_refs, expected_probe=expected_probe)
                calls = [(s, s.actor, s.actor.update_weights.remote(version, bucket_refs, expected_probe))
                         for s in self._slots]
            updates, errors = [], []
            for slot, actor, update_ref in calls:
                try:
                    updates.append(ray.get(update_ref))
                except DEAD as exc:  # the replacement starts with these weights and verifies them
                    self._replace(slot, actor, exc)
                    self._await_start(slot)
                except WeightSyncError as exc:
                    errors.append(f"rollout worker {slot.slot_id}: {_reason(exc)}")
            if errors:
                raise WeightSyncError("; ".join(errors))
            return updates

    def add_worker(self, wait: bool = True) -> int:
        """Start one more actor (with the current weights); returns its slot id."""
        with self._lock:
            slot = self._new_slot()
            self._slots.append(slot)
        if wait:
            self._await_start(slot)
        return slot.slot_id

    def remove_worker(self) -> int:
        """Retire the newest actor (after its queued calls); returns its slot id."""
        with self._lock:
            live = [s for s in self._slots if not s.draining]
            if len(live) <= 1:
                raise ValueError("a rollout pool keeps at least one worker")
            slot = live[-1]
            slot.draining = True
        self._stop_drained()
        return slot.slot_id

    def resize(self, num_workers: int, wait: bool = True) -> None:
        """Add or retire actors until `num_workers` serve (wait: until the new ones are up)."""
        if num_workers < 1:
            raise ValueError("a rollout pool keeps at least one worker")
        added = [self.add_worker(wait=False) for _ in range(num_workers - self.num_workers)]
        for _ in range(self.num_workers - num_workers):
            self.remove_worker()
        if wait:
            for slot in [s for s in list(self._slots) if s.slot_id in added]:
                self._await_start(slot)

    def health(self, timeout_s: float = 60.0) -> dict[int, WorkerHealth]:
        """Ping every actor; replace dead or unresponsive ones (with the current weights)."""
        with self._phase:
            report = {}
            for slot in [s for s in list(self._slots) if not s.draining]:
                self._await_start(slot)
                actor = slot.actor
                try:
                    health = ray.get(actor.health.remote(), timeout=timeout_s)
                    if not health.engine_ok:
                        raise RolloutEngineError("engine reported dead")
                except (*DEAD, GetTimeoutError) as exc:
                    self._replace(slot, actor, exc)
                    self._await_start(slot)
                    health = ray.get(slot.actor.health.remote(), timeout=timeout_s)
                report[slot.slot_id] = health
            return report

    def shutdown(self) -> None:
        """Stop every engine, then every actor (engines first: ray.kill of an actor whose engine still runs leaks its /dev/shm segments)."""
        with self._lock:
            slots, self._slots = self._slots, []
        _stop_actors([s.actor for s in slots])

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # -- internals -------------------------------------------------------------------------------
    def _new_slot(self) -> _Slot:
        slot = _Slot(slot_id=self._next_slot_id, actor=None, ready_ref=None)
        self._next_slot_id += 1
        self._start_actor(slot)
        return slot

    def _start_actor(self, slot: _Slot) -> None:
        """Create the slot's actor with the current weights queued before any other call (holds _lock)."""
        w = self._weights
        slot.actor = self._remote_actor.remote(self.model_dir, self.config, self.seed + slot.slot_id)
        slot.push_ref = (slot.actor.update_weights.remote(w.version, w.bucket_refs, w.expected_probe)
                         if w.bucket_refs else None)
        slot.ready_ref = slot.actor.health.remote()
        slot.pid = None

    def _await_start(self, slot: _Slot) -> None:
        for _ in range(self.max_restarts + 1):
            if slot.ready_ref is None:
                return
            ready, _ = ray.wait([slot.ready_ref], num_returns=1, timeout=self.config.start_timeout_s)
            if not ready:
                # most likely never placed, so no engine to shut down first: kill it now rather than
                # wait _stop_actors' 60 s for a shutdown call it can never answer
                with self._lock:
                    self._slots = [s for s in self._slots if s is not slot]
                ray.kill(slot.actor, no_restart=True)
                c = self.config
                raise RolloutError(
                    f"rollout worker {slot.slot_id} not serving after {c.start_timeout_s:g} s "
                    f"(rollout.start_timeout_s); it reserves {c.cpus_per_worker:g} CPU + {c.gpus_per_worker:g} GPU "
                    f"(rollout.cpus_per_worker, rollout.gpus_per_worker): `ray status` shows whether the cluster "
                    f"has room for it (pending demands)")
            self._finish_start(slot)
        if slot.ready_ref is not None:
            raise RolloutError(f"rollout worker {slot.slot_id} failed to start ({self.max_restarts + 1} attempts); "
                               f"last: {slot.last_error}")

    def _finish_start(self, slot: _Slot) -> None:
        with self._lock:
            actor, ready_ref, push_ref = slot.actor, slot.ready_ref, slot.push_ref
        if ready_ref is None:
            return
        try:
            if push_ref is not None:
                ray.get(push_ref)
            health = ray.get(ready_ref)
        except DEAD as exc:
            slot.last_error = _reason(exc)
            self._replace(slot, actor, exc)
            return
        except WeightSyncError as exc:
            raise WeightSyncError(f"rollout worker {slot.slot_id}: {_reason(exc)}") from None
        died = None
        with self._lock:
            if slot.actor is actor and slot.ready_ref is ready_ref:
                slot.ready_ref, slot.push_ref, slot.pid = None, None, health.pid
                died, slot.died = slot.died, None
        if died is not None:
            self.faults.record("rollout", what=died[1], recovery_s=time.monotonic() - died[0],
                               action=f"replaced by pid {health.pid} serving weights v{health.weight_version}; "
                                      f"its unfinished calls re-queued")

    def _replace(self, slot: _Slot, dead_actor: Any, exc: BaseException) -> None:
        """Swap a dead actor for a new one with the current weights (once per death)."""
        with self._lock:
            if slot.actor is not dead_actor:
                return  # another call on the same dead actor got here first
            self.restarts += 1
            if slot.died is None:  # a replacement that dies while starting keeps the first death's time
                cause = _reason(exc).split(". ")[0][:120]  # Ray's death notices run to a paragraph
                slot.died = (time.monotonic(), f"rollout worker {slot.slot_id} (pid {slot.pid}) died ({cause})")
            self._start_actor(slot)
        _stop_actors([dead_actor])

    def _dispatch(self, pending: deque, chunk_refs: dict, samples: list[Sample], sampling: SamplingSpec,
                  answer_format: str) -> dict[Any, _Slot]:
        """Queue calls on serving actors up to max_in_flight; return the start-up refs to wait on."""
        with self._lock:
            for slot in self._slots:
                while pending and slot.serving and len(slot.in_flight_refs) < self.max_in_flight:
                    chunk = pending.popleft()
                    ref = slot.actor.generate.remote([samples[i] for i in chunk.indices], sampling, answer_format)
                    slot.in_flight_refs.add(ref)
                    chunk_refs[ref] = (slot, slot.actor, chunk)
            return {s.ready_ref: s for s in self._slots if s.ready_ref is not None}

    def _collect(self, ref: Any, chunk_refs: dict, pending: deque, results: list, samples: list[Sample]) -> None:
        slot, actor, chunk = chunk_refs.pop(ref)
        with self._lock:
            slot.in_flight_refs.discard(ref)
        try:
            groups = ray.get(ref)
        except DEAD as exc:
            self._replace(slot, actor, exc)
            pending.extendleft(reversed(_after_death(chunk, exc, results, samples)))
            return
        except WeightSyncError as exc:
            raise WeightSyncError(f"rollout worker {slot.slot_id}: {_reason(exc)}") from None
        finally:
            self._stop_drained()
        for i, group in zip(chunk.indices, groups):
            if results[i] is not None:
                raise RolloutError(f"sample {samples[i].id!r} came back twice")  # a bug, never data
            results[i] = group

    def _stop_drained(self) -> None:
        with self._lock:
            done = [s for s in self._slots if s.draining and not s.in_flight_refs]
            self._slots = [s for s in self._slots if s not in done]
        _stop_actors([s.actor for s in done])


def _after_death(chunk: _Chunk, exc: BaseException, results: list, samples: list[Sample]) -> list[_Chunk]:
    """Chunks to retry after the actor holding `chunk` died; a prompt that killed two gets an error."""
    deaths = chunk.deaths + 1
    if deaths < 2:
        return [_Chunk(chunk.indices, deaths)]
    if len(chunk.indices) > 1:
        return [_Chunk((i,), 1) for i in chunk.indices]
    (i,) = chunk.indices
    results[i] = Group(sample=samples[i], prompt_token_ids=(), completions=(),
                       error=f"sample {samples[i].id!r}: two rollout workers died generating it (last: {_reason(exc)})")
    return []


def _reason(exc: BaseException) -> str:
    """The remote exception's own message (Ray's traceback wrapper dropped), kept to one line."""
    cause = getattr(exc, "cause", None)
    exc = cause if isinstance(cause, BaseException) else exc
    lines = str(exc).strip().splitlines()
    message = lines[-1][:300] if lines else ""
    return message if isinstance(exc, WeightSyncError) else f"{type(exc).__name__}: {message}"


def _stop_actors(actors: list, timeout_s: float = 60.0) -> None:
    """Shut each engine down, then kill the actor; an actor that is already dead is just killed."""
    shutdown_refs = [a.shutdown.remote() for a in actors]
    if shutdown_refs:
        ray.wait(shutdown_refs, num_returns=len(shutdown_refs), timeout=timeout_s)
    for actor in actors:
        ray.kill(actor, no_restart=True)
