"""HIT@K on hand-computed cases; AUC and NE through torchrec.metrics against formulas."""

import math

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from torchrec_transact.metrics import auc_ne_module, HitAtK, model_outputs


def test_hit_at_3_hand_computed() -> None:
    # Request 1 (4 candidates, rows shuffled): utility = p_save; top 3 are rows 2, 0, 4.
    # Request 2 (2 candidates): both are in its top 3 whatever the model.
    predictions = torch.tensor(
        [[0.8, 0.0], [0.1, 0.0], [0.9, 0.0], [0.3, 0.0], [0.7, 0.0], [0.2, 0.0]]
    )
    labels = torch.tensor(
        [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    )
    request_ids = torch.tensor([1, 1, 1, 2, 1, 2])
    every = HitAtK(["save", "hide"], k=3, negative_tasks=["hide"], min_candidates=1)
    every.update(predictions, labels, request_ids)
    # save: request 1 top3 (rows 2, 0, 4) hold 0 + 1 + 1 = 2; request 2: 1 + 0 = 1.
    # hide: request 1: 1 + 0 + 1 = 2; request 2: 0 + 1 = 1.  Means over 2 requests.
    assert every.compute() == {"hit@3-save": 1.5, "hit@3-hide": 1.5, "hit@3-requests": 2.0}
    # By default only requests whose top 3 the ranking can change count (4+ candidates).
    hit = HitAtK(["save", "hide"], k=3, negative_tasks=["hide"])
    hit.update(predictions, labels, request_ids)
    assert hit.compute() == {"hit@3-save": 2.0, "hit@3-hide": 2.0, "hit@3-requests": 1.0}
    # A second batch accumulates: one more request of 4 candidates, 1 save in its top 3.
    hit.update(torch.tensor([[0.5, 0.0], [0.4, 0.0], [0.3, 0.0], [0.2, 0.0]]),
               torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), torch.tensor([9, 9, 9, 9]))
    assert hit.compute() == {"hit@3-save": 1.5, "hit@3-hide": 1.0, "hit@3-requests": 2.0}
    hit.reset()
    assert hit.compute() == {"hit@3-save": None, "hit@3-hide": None, "hit@3-requests": 0.0}


def test_hit_utility_weights_change_the_ranking() -> None:
    predictions = torch.tensor([[0.9, 0.9], [0.5, 0.0], [0.4, 0.0], [0.3, 0.0]])
    labels = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    ids = torch.zeros(4, dtype=torch.long)
    by_save = HitAtK(["save", "hide"], k=1)
    by_save.update(predictions, labels, ids)
    assert by_save.compute()["hit@1-hide"] == 1.0  # the top candidate is the hidden one
    penalised = HitAtK(["save", "hide"], k=1, utility_weights={"save": 1.0, "hide": -1.0})
    penalised.update(predictions, labels, ids)
    assert penalised.compute() == {"hit@1-save": 1.0, "hit@1-hide": 0.0, "hit@1-requests": 1.0}
    with pytest.raises(ValueError, match="unknown tasks"):
        HitAtK(["save"], utility_weights={"click": 1.0})
    with pytest.raises(ValueError, match=r"expected \[B, 2\]"):
        by_save.update(torch.zeros(3, 3), torch.zeros(3, 3), torch.zeros(3))


def test_auc_and_ne_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    tasks = ["click", "hide"]
    module = auc_ne_module(tasks, batch_size=50)
    all_logits, all_labels = [], []
    for _ in range(4):
        labels = (torch.rand(50, 2, generator=g) < 0.3).float()
        logits = torch.randn(50, 2, generator=g) + 1.5 * labels
        module.update(model_outputs(tasks, logits, labels))
        all_logits.append(logits)
        all_labels.append(labels)
    result = module.compute()
    logits, labels = torch.cat(all_logits), torch.cat(all_labels)
    for i, task in enumerate(tasks):
        p, y = torch.sigmoid(logits[:, i]).double(), labels[:, i].double()
        auc = float(binary_auroc(p, y.long()))
        assert float(result[f"auc-{task}|window_auc"]) == pytest.approx(auc, abs=1e-4)
        ce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
        rate = y.mean()
        base = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
        assert float(result[f"ne-{task}|lifetime_ne"]) == pytest.approx(float(ce / base), rel=1e-3)
