"""``python -m experiments.table2``: the paper's Table 2 (CIFAR-10 leave-one-class-out AUC)
reproduced in this framework. The runner and its flags are in experiments/results/table2_runner.py
(the record in table2_record.py, the report in table2_report.py)."""
from experiments import common
from experiments.results.table2_runner import main

if __name__ == "__main__":
    common.run_script(main)
