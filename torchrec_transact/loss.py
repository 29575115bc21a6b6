#!/usr/bin/env python3
"""The paper's weighted multi-label cross-entropy (TransAct, section 3.4)."""

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn


class WeightedMultiTaskLoss(nn.Module):
    """Binary cross-entropy per task head, weighted by the labels of all tasks.

    For example n with labels y[n, j] and user weight w_u[n], the loss of head i is::

        w[n, i] = sum_j M[i, j] * y[n, j] + m0[i] * (1 - y[n, i])
        loss    = sum_{n, i} w_u[n] * w[n, i] * BCE(logit[n, i], y[n, i]) / (B * T)

    M is the label-weight matrix (how much an action of task j weighs in head i: a save
    may count more than a click, a hide weighs on the save head) and m0 the weight of
    the head's negatives. Identity M, m0 = 1 and unit user weights give exactly the mean
    binary cross-entropy over all B x T logits.

    Args:
        label_weight_matrix (Union[torch.Tensor, Sequence[Sequence[float]]]): M, [T, T].
        negative_weight (Union[float, Sequence[float]]): m0, one value or one per head.

    Example::

        loss_fn = WeightedMultiTaskLoss(
            label_weight_matrix=[[1.0, 0.0], [0.5, 2.0]], negative_weight=1.0
        )
        logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
        labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        loss = loss_fn(logits, labels, weights=torch.tensor([1.0, 2.0]))
    """

    def __init__(
        self,
        label_weight_matrix: Union[torch.Tensor, Sequence[Sequence[float]]],
        negative_weight: Union[float, Sequence[float]] = 1.0,
    ) -> None:
        super().__init__()
        matrix = torch.as_tensor(label_weight_matrix, dtype=torch.float32)
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"label_weight_matrix has shape {tuple(matrix.shape)}, expected [T, T]"
            )
        negative = torch.as_tensor(negative_weight, dtype=torch.float32)
        if negative.dim() == 0:
            negative = negative.expand(matrix.shape[0]).clone()
        if negative.shape != (matrix.shape[0],):
            raise ValueError(
                f"negative_weight has shape {tuple(negative.shape)}, expected "
                f"({matrix.shape[0]},) or a single value"
            )
        # Not saved with the model: the weights of a run come from its config, also when it
        # resumes or warm-starts from a checkpoint trained with other weights.
        self.register_buffer("label_weight_matrix", matrix, persistent=False)
        self.register_buffer("negative_weight", negative, persistent=False)

    @property
    def num_tasks(self) -> int:
        return self.label_weight_matrix.shape[0]

    def forward(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor,
        weights: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            logits (torch.Tensor): [B, T].
            labels (torch.Tensor): [B, T] in [0, 1].
            weights (Optional[torch.Tensor]): [B] per-example (per-user) weights.

        Returns:
            torch.Tensor: the scalar loss.
        """
        tasks = self.num_tasks
        if logits.dim() != 2 or logits.shape[1] != tasks:
            raise ValueError(
                f"logits have shape {tuple(logits.shape)}, expected [B, {tasks}] "
                "(one column per task of the label-weight matrix)"
            )
        if labels.shape != logits.shape:
            raise ValueError(
                f"labels have shape {tuple(labels.shape)}, logits {tuple(logits.shape)}"
            )
        if weights is not None and weights.shape != (logits.shape[0],):
            raise ValueError(
                f"weights have shape {tuple(weights.shape)}, expected ({logits.shape[0]},)"
            )
        labels = labels.to(logits.dtype)
        head_weights = labels @ self.label_weight_matrix.t() + self.negative_weight * (
            1.0 - labels
        )
        if weights is not None:
            head_weights = head_weights * weights.unsqueeze(1)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        return (head_weights * bce).mean()


class NextActionLoss(nn.Module):
    """TransAct V2's Next Action Loss: from a user's realtime sequence (encoded without the
    candidate), predict the item of the user's next positive action, against the other
    positive examples' items of the batch (in-batch sampled softmax).

    For the P examples with a positive label, ``logits = user @ items.T`` is [P, P]; row p's
    target is its own candidate. A column with the same item as the row's target, or from
    the same request (the same user's other engagements, not negatives), is left out of
    that row. The loss is the mean cross-entropy over rows that keep at least one
    negative; 0 (on the graph) when none does.

    Args:
        positive_tasks (Sequence[int]): the label columns whose 1 is a positive action
            (click, save; not hide).

    Example::

        loss_fn = NextActionLoss(positive_tasks=[0])
        loss = loss_fn(
            user=torch.randn(4, 8), items=torch.randn(4, 8), item_ids=torch.tensor([5, 6, 7, 5]),
            labels=torch.tensor([[1.0], [1.0], [0.0], [1.0]]), request_ids=torch.tensor([0, 1, 1, 2]),
        )
    """

    def __init__(self, positive_tasks: Sequence[int]) -> None:
        super().__init__()
        self.positive_tasks = list(positive_tasks)

    def forward(
        self,
        user: torch.Tensor,
        items: torch.Tensor,
        item_ids: torch.Tensor,
        labels: torch.Tensor,
        request_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            user (torch.Tensor): [B, d], each example's user vector.
            items (torch.Tensor): [B, d], each example's candidate item vector.
            item_ids (torch.Tensor): int [B], the candidates' ids.
            labels (torch.Tensor): [B, T].
            request_ids (Optional[torch.Tensor]): int [B]; None: every example its own.

        Returns:
            torch.Tensor: scalar.
        """
        positive = (labels[:, self.positive_tasks] > 0).any(dim=1).nonzero().squeeze(1)
        zero = (user.sum() + items.sum()) * 0.0
        if positive.numel() < 2:
            return zero
        logits = user[positive].float() @ items[positive].float().t()
        ids = item_ids[positive]
        excluded = ids[:, None] == ids[None, :]
        if request_ids is not None:
            requests = request_ids[positive]
            excluded |= requests[:, None] == requests[None, :]
        diagonal = torch.eye(positive.numel(), dtype=torch.bool, device=logits.device)
        excluded &= ~diagonal
        rows = (~excluded & ~diagonal).any(dim=1)  # rows with at least one negative
        if not bool(rows.any()):
            return zero
        logits = logits.masked_fill(excluded, float("-inf"))
        targets = torch.arange(positive.numel(), device=logits.device)
        return F.cross_entropy(logits[rows], targets[rows])
