#!/usr/bin/env python3
"""The training wrapper torchrec's train pipelines drive."""

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from torchrec_transact.data.batch import TransActBatch
from torchrec_transact.loss import NextActionLoss, WeightedMultiTaskLoss


class TransActTrain(nn.Module):
    """``batch -> (loss, (loss, logits, labels))``, detached outputs, like ``DLRMTrain``.

    Args:
        model (nn.Module): ``TransActDLRM`` or ``TransActDCN`` (anything called as
            ``model(dense, sparse, sequence) -> [B, T]``).
        loss (Optional[nn.Module]): called as ``loss(logits, labels, weights)``; default
            the plain mean BCE (identity label-weight matrix).
        next_action_loss (Optional[NextActionLoss]): TransAct V2's Next Action Loss, added
            with ``next_action_weight``; needs a sequence encoder built with
            ``next_action=True``. Its value of the last step is in ``last_terms``.
        next_action_weight (float): its weight in the total loss.

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

    def __init__(
        self,
        model: nn.Module,
        loss: Optional[nn.Module] = None,
        next_action_loss: Optional[NextActionLoss] = None,
        next_action_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        num_tasks = len(model.tasks)
        self.loss_fn = loss if loss is not None else WeightedMultiTaskLoss(torch.eye(num_tasks))
        self.next_action_loss = next_action_loss
        self.next_action_weight = next_action_weight
        self.last_terms: Dict[str, torch.Tensor] = {}  # detached loss terms of the last step

    def forward(
        self, batch: TransActBatch
    ) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        logits = self.model(
            batch.dense_features, batch.sparse_features, batch.sequence_features
        )
        loss = self.loss_fn(logits.float(), batch.labels, batch.weights)
        self.last_terms = {}
        if self.next_action_loss is not None and self.training:
            transformer = self.model.sequence_encoder.transformer
            inputs = transformer.next_action_inputs() if transformer is not None else None
            if inputs is not None:
                user, items = inputs
                candidates = batch.sequence_features[self.model.sequence_encoder.config.candidate_feature].values()
                term = self.next_action_loss(user, items, candidates, batch.labels, batch.request_ids)
                self.last_terms = {"next_action_loss": term.detach()}
                loss = loss + self.next_action_weight * term
        return loss, (loss.detach(), logits.detach(), batch.labels.detach())
