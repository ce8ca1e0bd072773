"""`python -m medmo_rl.eval`: evaluate any HF checkpoint on the benchmarks (medmo_rl/driver/eval_runner.py;
benchmark names and scoring in medmo_rl/benchmarks.py)."""
import sys

from medmo_rl.driver.eval_runner import main

if __name__ == "__main__":
    sys.exit(main())
