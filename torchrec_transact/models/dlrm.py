#!/usr/bin/env python3
"""TransAct inside DLRM (Naumov et al. 2019, arXiv 1906.00091).

    dense [B, 13] ---- DenseArch (bottom MLP) -------------- [B, D] --.
    sparse KJT ------- SparseArch (EBC, pooled) ------------ [B, F, D] +-> InteractionArch
    sequence KJT ----- sequence encoder -> SequenceRows ---- [B, R, D] '   (pairwise dots)
                                                                             |
                                                  top MLP -> TaskHeads -> [B, T] logits

The sequence encoder's R output tokens (TransAct: the latest K and the max pool) become R
extra feature rows of the interaction, each projected to the embedding width D by one
shared linear layer. Projection rather than reshape: TransAct's tokens are d_model wide
(96 for 32 + 32 + 32), which rarely equals D, and per-token rows keep the latest-K and
long-term summaries as separate features, each with its own dot product against every
categorical feature.
"""

from typing import List, Optional, Sequence

import torch
from torch import nn
from torchrec.models.dlrm import DenseArch, InteractionArch, SparseArch
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact.models.heads import check_model_inputs, TaskHeads
from torchrec_transact.modules.sequence import SequenceEncoder

# A leaf for torch.fx (torchrec's pipeline traces the model): the check reads shapes and
# KJT keys. fx.wrap patches the calling module's globals, so it is registered here.
torch.fx.wrap("check_model_inputs")


def _choose2(n: int) -> int:
    return n * (n - 1) // 2


class SequenceRows(nn.Module):
    """[B, R * token_dim] encoder output -> [B, R, embedding_dim] interaction rows.

    Args:
        num_tokens (int): R.
        token_dim (int): width of each encoder output token.
        embedding_dim (int): D, the width of the categorical embeddings.
        device (Optional[torch.device]): device of the parameters.

    Example::

        rows = SequenceRows(num_tokens=11, token_dim=96, embedding_dim=16)
        rows(torch.randn(4, 11 * 96)).shape  # torch.Size([4, 11, 16])
    """

    def __init__(
        self,
        num_tokens: int,
        token_dim: int,
        embedding_dim: int,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        self.num_tokens = num_tokens
        self.token_dim = token_dim
        self.projection = nn.Linear(token_dim, embedding_dim, device=device)

    def forward(self, sequence: torch.Tensor) -> torch.Tensor:
        return self.projection(sequence.view(-1, self.num_tokens, self.token_dim))


class TransActDLRM(nn.Module):
    """DLRM with a realtime action-sequence encoder joining the interaction.

    Args:
        embedding_bag_collection (EmbeddingBagCollection): categorical features; all
            tables of one embedding width D.
        sequence_encoder (SequenceEncoder): ``TransAct`` or a baseline from
            ``torchrec_transact.modules.baselines``.
        dense_in_features (int): dense input width.
        dense_arch_layer_sizes (List[int]): bottom MLP; the last size must be D.
        over_arch_layer_sizes (List[int]): hidden layers of the top MLP; a linear head
            per task follows.
        tasks (Sequence[str]): task names, one logit each.
        dense_device (Optional[torch.device]): device of the dense parameters.

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t1", embedding_dim=8, num_embeddings=10, feature_names=["c1"]),
        ])
        transact = TransAct(TransActConfig(num_action_types=3, num_items=10, latest_k=2))
        model = TransActDLRM(ebc, transact, 4, [16, 8], [16], tasks=["click", "save"])
        sparse = KeyedJaggedTensor.from_lengths_sync(
            keys=["c1"], values=torch.tensor([1, 2]), lengths=torch.tensor([1, 1])
        )
        sequence = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 4, 6, 7]),
            lengths=torch.tensor([1, 0, 1, 0, 1, 1]),
            weights=torch.tensor([60.0, 60.0, 0.0, 0.0]),
        )
        logits = model(torch.randn(2, 4), sparse, sequence)  # [2, 2]
    """

    def __init__(
        self,
        embedding_bag_collection: EmbeddingBagCollection,
        sequence_encoder: SequenceEncoder,
        dense_in_features: int,
        dense_arch_layer_sizes: List[int],
        over_arch_layer_sizes: List[int],
        tasks: Sequence[str] = ("click",),
        dense_device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        self.sparse_arch = SparseArch(embedding_bag_collection)
        dims = {c.embedding_dim for c in embedding_bag_collection.embedding_bag_configs()}
        if len(dims) != 1:
            raise ValueError(f"DLRM needs one embedding width for all tables, got {sorted(dims)}")
        embedding_dim = dims.pop()
        if dense_arch_layer_sizes[-1] != embedding_dim:
            raise ValueError(
                f"the bottom MLP ends at {dense_arch_layer_sizes[-1]}, the embeddings are "
                f"{embedding_dim} wide; they must match for the dot interaction"
            )
        self.dense_in_features = dense_in_features
        self.dense_arch = DenseArch(dense_in_features, dense_arch_layer_sizes, dense_device)
        self.sequence_encoder = sequence_encoder
        num_rows = int(sequence_encoder.output_tokens)
        self.sequence_rows: Optional[SequenceRows] = (
            SequenceRows(num_rows, sequence_encoder.token_dim, embedding_dim, dense_device)
            if num_rows > 0
            else None
        )
        num_features = len(self.sparse_arch.sparse_feature_names) + num_rows
        self.inter_arch = InteractionArch(num_sparse_features=num_features)
        over_in = embedding_dim + _choose2(num_features + 1)
        self.over_arch = MLP(over_in, over_arch_layer_sizes, device=dense_device)
        self.heads = TaskHeads(over_arch_layer_sizes[-1], tasks, device=dense_device)

    @property
    def tasks(self) -> List[str]:
        return self.heads.tasks

    @property
    def sparse_feature_names(self) -> List[str]:
        return self.sparse_arch.sparse_feature_names

    @property
    def embedding_bag_collection(self) -> EmbeddingBagCollection:
        return self.sparse_arch.embedding_bag_collection

    @property
    def dense_width(self) -> int:
        """Columns of ``dense_features``."""
        return self.dense_in_features

    def forward(
        self,
        dense_features: torch.Tensor,
        sparse_features: KeyedJaggedTensor,
        sequence_features: KeyedJaggedTensor,
    ) -> torch.Tensor:
        """
        Args:
            dense_features (torch.Tensor): [B, dense_in_features].
            sparse_features (KeyedJaggedTensor): the EBC's features.
            sequence_features (KeyedJaggedTensor): the sequence encoder's input.

        Returns:
            torch.Tensor: logits [B, len(tasks)].
        """
        check_model_inputs(
            "TransActDLRM",
            dense_features,
            sparse_features,
            self.dense_in_features,
            self.sparse_arch.sparse_feature_names,
        )
        return self.logits_from_embeddings(
            dense_features,
            self.sparse_arch(sparse_features).flatten(1),
            self.sequence_encoder(sequence_features),
        )

    def logits_from_embeddings(
        self,
        dense_features: torch.Tensor,
        sparse_embeddings: torch.Tensor,
        sequence_output: torch.Tensor,
    ) -> torch.Tensor:
        """The model after its lookups and its sequence encoder (serving calls it with
        embeddings it looked up itself).

        Args:
            dense_features (torch.Tensor): [B, dense_in_features].
            sparse_embeddings (torch.Tensor): [B, F * D], pooled embeddings in
                ``sparse_feature_names`` order.
            sequence_output (torch.Tensor): [B, sequence_encoder.output_dim].

        Returns:
            torch.Tensor: logits [B, len(tasks)].
        """
        embedded_dense = self.dense_arch(dense_features)
        embedded_sparse = sparse_embeddings.view(
            sparse_embeddings.shape[0], -1, embedded_dense.shape[1]
        )
        if self.sequence_rows is not None:
            rows = self.sequence_rows(sequence_output)
            embedded_sparse = torch.cat([embedded_sparse, rows], dim=1)
        interactions = self.inter_arch(embedded_dense, embedded_sparse)
        return self.heads(self.over_arch(interactions))
