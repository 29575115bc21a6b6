"""Small builders shared by the tests."""

import io
from contextlib import redirect_stderr
from typing import List, Sequence, Tuple

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact import TransAct, TransActConfig
from torchrec_transact.data import sequence_kjt

# One example: (actions, items, ages, candidate).
Example = Tuple[List[int], List[int], List[float], int]


def kjt_from_examples(examples: Sequence[Example]) -> KeyedJaggedTensor:
    actions = [a for ex in examples for a in ex[0]]
    items = [i for ex in examples for i in ex[1]]
    ages = [t for ex in examples for t in ex[2]]
    return sequence_kjt(
        torch.tensor(actions, dtype=torch.long),
        torch.tensor(items, dtype=torch.long),
        torch.tensor(ages, dtype=torch.float),
        torch.tensor([len(ex[0]) for ex in examples], dtype=torch.long),
        torch.tensor([ex[3] for ex in examples], dtype=torch.long),
    )


def random_example(
    g: torch.Generator, length: int, num_action_types: int = 5, num_items: int = 50
) -> Example:
    gaps = torch.rand(length, generator=g) * 3600.0
    ages = torch.cumsum(gaps, 0) + 1.0
    return (
        torch.randint(0, num_action_types, (length,), generator=g).tolist(),
        torch.randint(0, num_items, (length,), generator=g).tolist(),
        ages.tolist(),
        int(torch.randint(0, num_items, (1,), generator=g)),
    )


def small_config(**overrides: object) -> TransActConfig:
    defaults = dict(
        num_action_types=5,
        num_items=50,
        action_embedding_dim=8,
        item_embedding_dim=8,
        max_seq_len=12,
        latest_k=3,
        ffn_dim=16,
    )
    defaults.update(overrides)
    return TransActConfig(**defaults)  # type: ignore[arg-type]


def make_transact(seed: int = 0, **overrides: object) -> TransAct:
    torch.manual_seed(seed)
    return TransAct(small_config(**overrides))


def train_then_score(model, batches, steps: int, eval_batch, lr: float = 3e-3):
    """Adam on the trainable parameters for ``steps`` batches of ``batches``; returns the
    (logits, labels) of ``eval_batch`` in evaluation mode. ``model`` is a TransActTrain."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss, _ = model(next(batches))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        _, (_, logits, labels) = model(eval_batch)
    return logits, labels


def assert_one_line_exit(call, code: int, message: str, prefix: str = "transact-train: error:") -> None:
    """``call`` exits with ``code`` after one error line on stderr containing ``message``,
    and no traceback (a progress bar may come before it)."""
    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit_info:
        call()
    lines = err.getvalue().strip().splitlines()
    assert exit_info.value.code == code, err.getvalue()[-2000:]
    errors = [line for line in lines if line.startswith(prefix)]
    assert len(errors) == 1 and errors[0] == lines[-1] and message in errors[0], lines
    assert not any("Traceback" in line for line in lines), lines


def write_file(tmp_path, name: str, text: str) -> str:
    """``text`` as the file ``tmp_path/name``; its path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)
