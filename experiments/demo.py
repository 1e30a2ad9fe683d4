"""``python -m experiments.demo`` (``make demo``): SAGAN against PCA and kNN on the embedded
digits over seeds. The demo itself, and its flags, are in experiments/results/demo.py."""
from experiments import common
from experiments.results.demo import main

if __name__ == "__main__":
    common.run_script(main)
