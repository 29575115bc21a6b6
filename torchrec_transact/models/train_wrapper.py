#!/usr/bin/env python3
"""The training wrapper torchrec's train pipelines drive."""

from typing import Optional, Tuple

import torch
from torch import nn

from torchrec_transact.data.batch import TransActBatch
from torchrec_transact.loss import WeightedMultiTaskLoss


class TransActTrain(nn.Module):
    """``batch -> (loss, (loss, logits, labels))``, detached outputs, like ``DLRMTrain``.

    Args:
        model (nn.Module): ``TransActDLRM`` or ``TransActDCN`` (anything called as
            ``model(dense, sparse, sequence) -> [B, T]``).
        loss (Optional[nn.Module]): called as ``loss(logits, labels, weights)``; default
            the plain mean BCE (identity label-weight matrix).

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t1", embedding_dim=8, num_embeddings=10, feature_names=["c1"]),
        ])
        model = TransActDCN(
            ebc, NoSequence(TransActConfig(num_action_types=3, num_items=10)), 2, [], [8],
            tasks=["click"],
        )
        train = TransActTrain(model)
        batch = TransActBatch(
            dense_features=torch.randn(2, 2),
            sparse_features=KeyedJaggedTensor.from_lengths_sync(
                keys=["c1"], values=torch.tensor([3, 4]), lengths=torch.tensor([1, 1])
            ),
            sequence_features=KeyedJaggedTensor.from_lengths_sync(
                keys=["candidate_item_id"], values=torch.tensor([1, 2]), lengths=torch.tensor([1, 1])
            ),
            labels=torch.tensor([[1.0], [0.0]]),
            weights=torch.ones(2),
            request_ids=torch.tensor([0, 1]),
        )
        loss, (loss_value, logits, labels) = train(batch)
    """

    def __init__(self, model: nn.Module, loss: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.model = model
        num_tasks = len(model.tasks)
        self.loss_fn = loss if loss is not None else WeightedMultiTaskLoss(torch.eye(num_tasks))

    def forward(
        self, batch: TransActBatch
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        logits = self.model(
            batch.dense_features, batch.sparse_features, batch.sequence_features
        )
        loss = self.loss_fn(logits.float(), batch.labels, batch.weights)
        return loss, (loss.detach(), logits.detach(), batch.labels.detach())
