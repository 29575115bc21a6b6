#!/usr/bin/env python3
"""A run's log: JSON lines in ``output_dir/metrics.jsonl`` (rank 0) and, when installed,
TensorBoard."""

import json
import os
from typing import Any, Dict


class RunLog:
    """One JSON object a line: ``{"model", "step", "kind", ...values}``.

    Args:
        output_dir (str): where ``metrics.jsonl`` (appended) and ``tensorboard/`` go.
        rank (int): only rank 0 writes.
        name (str): the model's name in every row (the encoder).
    """

    def __init__(self, output_dir: str, rank: int, name: str) -> None:
        self.rank, self.name = rank, name
        self.file = None
        self.tensorboard = None
        if rank == 0:
            os.makedirs(output_dir, exist_ok=True)
            self.file = open(os.path.join(output_dir, "metrics.jsonl"), "a")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(os.path.join(output_dir, "tensorboard", name))
            except ImportError:  # tensorboard is optional
                self.tensorboard = None

    def write(self, step: int, kind: str, values: Dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"model": self.name, "step": step, "kind": kind, **values}) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
