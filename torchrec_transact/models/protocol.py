#!/usr/bin/env python3
"""The contract of a ranking model: what training, evaluation and serving rely on."""

from typing import List, Protocol, runtime_checkable

import torch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact.modules.sequence import SequenceEncoder


@runtime_checkable
class RankingModel(Protocol):
    """A ranking model over dense, categorical and action-sequence features
    (``TransActDCN``, ``TransActDLRM``).

    ``model(dense, sparse, sequence)`` gives ``[B, T]`` logits; it equals
    ``logits_from_embeddings(dense, pooled categorical embeddings in
    sparse_feature_names order, sequence_encoder(sequence))``, the entry serving uses
    after doing the lookups and the sequence encoding itself.
    """

    sequence_encoder: SequenceEncoder

    @property
    def tasks(self) -> List[str]: ...

    @property
    def dense_width(self) -> int: ...

    @property
    def sparse_feature_names(self) -> List[str]: ...

    @property
    def embedding_bag_collection(self) -> EmbeddingBagCollection: ...

    def __call__(
        self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor, sequence_features: KeyedJaggedTensor
    ) -> torch.Tensor: ...

    def logits_from_embeddings(
        self, dense_features: torch.Tensor, sparse_embeddings: torch.Tensor, sequence_output: torch.Tensor
    ) -> torch.Tensor: ...
