#!/usr/bin/env python3
"""The one batch type every data source produces and every model consumes."""

from dataclasses import dataclass, fields
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable


# The categorical feature that carries the candidate's own item id (its pooled embedding
# joins the ranking model's features), in every data source of this package; serving fills
# it from the request's candidate ids.
CANDIDATE_ITEM_FEATURE = "candidate_item"
# TransAct V2's sequence keys (TransActConfig's defaults).
LIFELONG_ACTION_FEATURE, LIFELONG_ITEM_FEATURE = "lifelong_action_type", "lifelong_item_id"
IMPRESSION_ITEM_FEATURE = "impression_item_id"


@dataclass
class TransActBatch(Pipelineable):
    """Dense, categorical and action-sequence features of B examples, with labels.

    The examples of one request share the user, the sequence and the request time and
    differ in the candidate; ranking metrics (HIT@3) rank the candidates of a request, so
    a batch never splits a request.

    Args:
        dense_features (torch.Tensor): float [B, D].
        sparse_features (KeyedJaggedTensor): categorical features (pooled by an EBC).
        sequence_features (KeyedJaggedTensor): action type, item id and candidate item
            id; weights are action ages in seconds (the :class:`TransAct` input).
        labels (torch.Tensor): float [B, T], one column per task.
        weights (torch.Tensor): float [B], per-example (per-user) loss weight.
        request_ids (torch.Tensor): int64 [B].

    Example::

        batch = TransActBatch(
            dense_features=torch.zeros(2, 13),
            sparse_features=KeyedJaggedTensor.from_lengths_sync(
                keys=["c1"], values=torch.tensor([3, 4]), lengths=torch.tensor([1, 1])
            ),
            sequence_features=KeyedJaggedTensor.from_lengths_sync(
                keys=["action_type", "item_id", "candidate_item_id"],
                values=torch.tensor([1, 5, 7, 8]),
                lengths=torch.tensor([1, 0, 1, 0, 1, 1]),
                weights=torch.tensor([60.0, 60.0, 0.0, 0.0]),
            ),
            labels=torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
            weights=torch.ones(2),
            request_ids=torch.tensor([0, 0]),
        )
        batch.batch_size  # 2
    """

    dense_features: torch.Tensor
    sparse_features: KeyedJaggedTensor
    sequence_features: KeyedJaggedTensor
    labels: torch.Tensor
    weights: torch.Tensor
    request_ids: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.labels.shape[0]

    def _map(self, fn) -> "TransActBatch":  # type: ignore[no-untyped-def]
        # type(self): subclasses (SyntheticBatch) keep their extra fields.
        return type(self)(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device, non_blocking: bool = False) -> "TransActBatch":
        return self._map(lambda t: t.to(device=device, non_blocking=non_blocking))

    def record_stream(self, stream: torch.Stream) -> None:
        for f in fields(self):
            getattr(self, f.name).record_stream(stream)

    def pin_memory(self) -> "TransActBatch":
        return self._map(lambda t: t.pin_memory())
