"""vLLM rollout for the RL stage: G completions per prompt, verified weight pushes, scaling.

    rollout.pool.RolloutPool    N Ray actors; what the RL loop calls (generate, push_weights, resize, health)
    rollout.worker.RolloutWorker one vLLM engine, a plain class (no Ray)
    rollout.actor.RolloutActor   the worker's thin Ray-facing wrapper
    rollout.probe                the weight-sync probe the learner computes with transformers (no ray/vllm)

Nothing is imported here, so `import rollout.probe` stays free of ray and vllm.
"""
