"""Training-side code shared by scripts/train_*.py and scripts/bench_*.py (not part of the runtime install)."""
