"""Format reward: open-r1's tag count (`tag_count_reward`, huggingface/open-r1 rewards.py).

    tag_count = 0.25·[count("<think>\\n") = 1] + 0.25·[count("\\n</think>\\n") = 1]
              + 0.25·[count("\\n<answer>\\n") = 1] + 0.25·[count("\\n</answer>") = 1]

so "<think>\\n...\\n</think>\\n<answer>\\n...\\n</answer>" scores 1.0 and
"<think>x</think><answer>y</answer>" scores 0.0 (the tags must sit on their own lines).
Partial credit rewards each well-placed tag. A non-string completion scores 0.0.
"""
from __future__ import annotations

_TAGS = ("<think>\n", "\n</think>\n", "\n<answer>\n", "\n</answer>")


def tag_count(completion: str) -> float:
    """Quarter point per tag that occurs exactly once (module docstring); in [0, 1]."""
    if not isinstance(completion, str):
        return 0.0
    count = completion.count
    return 0.25 * ((count(_TAGS[0]) == 1) + (count(_TAGS[1]) == 1) + (count(_TAGS[2]) == 1) + (count(_TAGS[3]) == 1))
