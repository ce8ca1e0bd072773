"""Completion parsing for the rewards: the project's one parser lives in `medmo_rl.answers`
(the eval reads completions with the same code); these names are re-exported for reward code."""
from medmo_rl.answers import ParsedCompletion, as_reference, parse_completion

__all__ = ["ParsedCompletion", "as_reference", "parse_completion"]
