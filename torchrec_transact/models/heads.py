#!/usr/bin/env python3
"""Pieces both ranking models share: task heads, sequence rows, input checks."""

from typing import List, Optional, Sequence

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


class TaskHeads(nn.Module):
    """One logit per task on top of a shared representation.

    With no hidden layers the heads are one linear layer whose column i is task i's
    head (T linear heads computed as one matmul); with hidden layers each task gets its
    own small MLP.

    Args:
        in_features (int): width of the shared representation.
        tasks (Sequence[str]): task names, in logit order (configuration, not code).
        hidden_layer_sizes (Sequence[int]): hidden widths of each task's MLP.
        device (Optional[torch.device]): device of the parameters.

    Example::

        heads = TaskHeads(16, ["click", "save", "hide"])
        heads(torch.randn(4, 16)).shape  # torch.Size([4, 3])
    """

    def __init__(
        self,
        in_features: int,
        tasks: Sequence[str],
        hidden_layer_sizes: Sequence[int] = (),
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks={list(tasks)}: need at least one, no duplicates")
        self.tasks: List[str] = list(tasks)
        if not hidden_layer_sizes:
            self.linear = nn.Linear(in_features, len(tasks), device=device)
            self.mlps = None
        else:
            self.linear = None
            self.mlps = nn.ModuleList()
            for _ in tasks:
                layers: List[nn.Module] = []
                width = in_features
                for size in hidden_layer_sizes:
                    layers += [nn.Linear(width, size, device=device), nn.ReLU()]
                    width = size
                layers.append(nn.Linear(width, 1, device=device))
                self.mlps.append(nn.Sequential(*layers))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features (torch.Tensor): [B, in_features].

        Returns:
            torch.Tensor: logits [B, len(tasks)].
        """
        if self.linear is not None:
            return self.linear(features)
        return torch.cat([mlp(features) for mlp in self.mlps], dim=1)


def check_model_inputs(
    model: str,
    dense_features: torch.Tensor,
    sparse_features: KeyedJaggedTensor,
    dense_width: int,
    sparse_feature_names: List[str],
) -> None:
    """Raises ``ValueError`` when the batch does not carry what the model was built for.

    Models that call it register it with ``torch.fx.wrap`` in their own module."""
    if dense_features.dim() != 2 or dense_features.shape[1] != dense_width:
        raise ValueError(
            f"{model}: dense_features have shape {tuple(dense_features.shape)}, expected "
            f"[B, {dense_width}]"
        )
    keys = sparse_features.keys()
    missing = [name for name in sparse_feature_names if name not in keys]
    if missing:
        raise ValueError(
            f"{model}: sparse feature(s) {missing} of the EmbeddingBagCollection are "
            f"missing from the batch's sparse_features (keys: {keys})"
        )
    batch = dense_features.shape[0]
    if sparse_features.stride() != batch:
        raise ValueError(
            f"{model}: sparse_features hold {sparse_features.stride()} examples, "
            f"dense_features {batch}"
        )

