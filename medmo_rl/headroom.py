"""`python -m medmo_rl.headroom`: greedy vs sampled vs best-of-G grounding metrics of a checkpoint
(medmo_rl/driver/headroom.py; the best-of-G rule in medmo_rl/grounding.py)."""
import sys

from medmo_rl.driver.headroom import main

if __name__ == "__main__":
    sys.exit(main())
