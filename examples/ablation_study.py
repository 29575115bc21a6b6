#!/usr/bin/env python3
"""The paper's offline comparison on your own event log, or on the synthetic data.

Trains average pooling, TransAct and TransAct without its time-window mask with the
library's training loop (same budget, two seeds each) and writes a markdown table (mean and
spread of HIT@3 on save and hide, AUC, change against average pooling), a JSON file and a
chart. About 1 minute on 2 CPU cores.

    python examples/ablation_study.py                            # synthetic
    python examples/ablation_study.py --data movielens --data-path ml-100k.inter

For the full table (every encoder and every TransAct ablation, three seeds):
``python -m torchrec_transact.ablation --data synthetic``.
"""

import sys

from torchrec_transact.ablation import main

if __name__ == "__main__":
    args = sys.argv[1:] or ["--data", "synthetic"]
    main(
        args
        + ["--variants", "avg_pool,transact,no_time_window", "--seeds", "2", "--quick",
           "--output-dir", "outputs/ablation_example"]
    )
