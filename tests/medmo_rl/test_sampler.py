from medmo_rl.sampler import PromptSampler, SamplerState


def test_resume_yields_identical_ids_across_epoch_boundary():
    items = [f"id{i}" for i in range(7)]
    straight = PromptSampler(items, seed=42)
    uninterrupted = [straight.take(3) for _ in range(6)]  # 18 draws: crosses two epoch boundaries

    first = PromptSampler(items, seed=42)
    resumed_draws = [first.take(3) for _ in range(2)]  # stop after 6 draws (mid epoch 0)
    saved = SamplerState(**vars(first.state))
    second = PromptSampler(items, seed=42, state=saved)  # a fresh process
    resumed_draws += [second.take(3) for _ in range(4)]
    assert resumed_draws == uninterrupted
    assert second.state.epoch == 2


def test_each_epoch_is_a_permutation_and_epochs_differ():
    items = list(range(10))
    s = PromptSampler(items, seed=0)
    e0, e1 = s.take(10), s.take(10)
    assert sorted(e0) == items and sorted(e1) == items and e0 != e1
    assert s.epochs_done == 2.0
