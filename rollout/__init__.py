"""vLLM rollout for the RL stage: G completions per prompt, verified weight pushes, scaling.

    rollout.pool.RolloutPool    N Ray actors; what the RL loop calls (generate, push_weights, resize, health)
    rollout.worker.RolloutWorker one vLLM engine, a plain class (no Ray)
    rollout.actor.RolloutActor   the worker's thin Ray-facing wrapper

The weight-sync probe both sides compute lives in medmo_rl/probe.py (the learner needs it too).
Nothing is imported here, so `import rollout.worker` stays free of ray.
"""
