"""TransAct learns a task that needs the sequence, in float32 and in bfloat16 autocast."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
from quickstart import train_category_match  # noqa: E402


@pytest.mark.parametrize("bf16", [False, True])
def test_quickstart_task_is_learned(bf16: bool) -> None:
    result = train_category_match(
        steps=200,
        batch_size=128,
        max_seq_len=20,
        hide_rate=0.1,
        bf16=bf16,
        seed=0,
        verbose=False,
    )
    # A model blind to the sequence sits at AUC 0.5 and loss ln 2 = 0.693.
    assert result["eval_auc"] > 0.95, result
    assert result["last_loss"] < 0.6 * result["first_loss"], result
