"""`python -m medmo_rl.control`: resize the rollout pool of a running job (medmo_rl/driver/control.py)."""
import sys

from medmo_rl.driver.control import main

if __name__ == "__main__":
    sys.exit(main())
