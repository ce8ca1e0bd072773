"""The driver: the ONE place that wires the parts into a Ray job.

    cluster.py         join or start the Ray cluster (init_ray), check a stage fits it, exit when
                       the cluster is gone
    run_dir.py         the run dir: outside Ray's working-dir copy, writable, with room (pure)
    fit.py             what a stage reserves and the rule that scales it to a small cluster (pure)
    pipeline.py        run_pipeline: SFT stages 1-3 (sft/) → RL (stage 4) → eval, the run directory
    rl_loop.py         the RL controller, one function per phase; Rollouts: the async schedule
    learner_group.py   N learner ranks (medmo_rl.learner.Learner) as Ray actors
    reward_service.py  start or attach to the reward service (rewards/) for the RL stage
    control.py         the named Control actor and its CLI (python -m medmo_rl.control)
    eval_runner.py     generation with the rollout worker + scoring (python -m medmo_rl.eval)

Below it, and never importing it: the parts of medmo_rl (config, schema, boxes, answers, algos,
learner, ...) and the libraries sft/, rollout/, rewards/ (tests/test_layers.py enforces this).
"""
