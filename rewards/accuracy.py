"""Label accuracy, the reward part (MedMO Fig. 2): the rules live in `medmo_rl.answers`, the one
home of answer matching, so the eval scores answers exactly as the reward does."""
from medmo_rl.answers import NO_LABELS_ACCURACY, label_accuracy, normalize_answer

__all__ = ["NO_LABELS_ACCURACY", "label_accuracy", "normalize_answer"]
