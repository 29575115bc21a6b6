#!/usr/bin/env python3
"""TransAct inside a DCN-V2 ranking model: the Pinnability layout of the TransAct paper.

    dense [B, dense_in] -- BatchNorm -- DenseArch -----------------.
    user vector [B, U] (last U dense columns, precomputed) ---------+
    sparse KJT -- EmbeddingBagCollection (pooled) ------------------+-- concat [B, N]
    sequence KJT -- sequence encoder (TransAct) --------------------'       |
                                     full-rank DCN-V2 CrossNet -> MLP -> TaskHeads -> [B, T]

The precomputed long-term user vector is the "batch" half of the paper's realtime-batch
hybrid; it arrives as the last ``user_embedding_dim`` columns of ``dense_features`` (so the
batch type needs no extra field) and skips batch normalisation (it is already an
embedding). The cross network is full rank, the paper's choice (``dcn_low_rank_dim=None``),
or low rank when given; the MLP is stacked on top of it (DCN-V2's stacked structure).
"""

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.models.dlrm import DenseArch
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact.models.heads import check_model_inputs, TaskHeads
from torchrec_transact.modules.sequence import SequenceEncoder


class FullRankCrossNet(CrossNet):
    """torchrec's full-rank DCN-V2 ``CrossNet`` (same parameters, initialisation and
    state-dict keys), with each layer's ``W x_l`` as one ``[B, N] x [N, N]`` GEMM.

    torchrec computes ``torch.matmul(W, x_l)`` with ``x_l`` as ``[B, N, 1]``, a batched
    matmul that broadcasts W; under bfloat16 autocast on CPU it materialises W once per
    example (a [500, 1184, 1184] copy per layer at batch 500): 27 ms against 344 ms at
    100 examples on this package's serving model.

    Example::

        cross = FullRankCrossNet(in_features=16, num_layers=3)
        cross(torch.randn(4, 16)).shape  # torch.Size([4, 16])
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """
        Args:
            input (torch.Tensor): [B, in_features].

        Returns:
            torch.Tensor: [B, in_features].
        """
        x_l = input
        for kernel, bias in zip(self.kernels, self.bias):
            x_l = torch.addcmul(x_l, input, F.linear(x_l, kernel, bias.view(-1)))
        return x_l


# A leaf for torch.fx (torchrec's pipeline traces the model): the check reads shapes and
# KJT keys. fx.wrap patches the calling module's globals, so it is registered here.
torch.fx.wrap("check_model_inputs")


class TransActDCN(nn.Module):
    """DCN-V2 over dense, categorical, realtime-sequence and long-term user features.

    Args:
        embedding_bag_collection (EmbeddingBagCollection): categorical features (tables
            may differ in width).
        sequence_encoder (SequenceEncoder): ``TransAct`` or a baseline.
        dense_in_features (int): dense feature width, before the user vector.
        dense_arch_layer_sizes (List[int]): MLP after batch norm; empty keeps the
            normalised features as they are.
        over_arch_layer_sizes (List[int]): hidden layers of the MLP over the cross net;
            a linear head per task follows.
        dcn_num_layers (int): cross layers.
        dcn_low_rank_dim (Optional[int]): None = full-rank DCN-V2, else the rank.
        user_embedding_dim (int): > 0: the last columns of ``dense_features`` are a
            precomputed user embedding of this width.
        tasks (Sequence[str]): task names, one logit each.
        dense_device (Optional[torch.device]): device of the dense parameters.

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t1", embedding_dim=8, num_embeddings=10, feature_names=["c1"]),
        ])
        transact = TransAct(TransActConfig(num_action_types=3, num_items=10, latest_k=2))
        model = TransActDCN(
            ebc, transact, dense_in_features=4, dense_arch_layer_sizes=[8],
            over_arch_layer_sizes=[16], dcn_num_layers=2, user_embedding_dim=3,
            tasks=["click", "save", "hide"],
        )
        sparse = KeyedJaggedTensor.from_lengths_sync(
            keys=["c1"], values=torch.tensor([1, 2]), lengths=torch.tensor([1, 1])
        )
        sequence = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 4, 6, 7]),
            lengths=torch.tensor([1, 0, 1, 0, 1, 1]),
            weights=torch.tensor([60.0, 60.0, 0.0, 0.0]),
        )
        logits = model(torch.randn(2, 4 + 3), sparse, sequence)  # [2, 3]
    """

    def __init__(
        self,
        embedding_bag_collection: EmbeddingBagCollection,
        sequence_encoder: SequenceEncoder,
        dense_in_features: int,
        dense_arch_layer_sizes: List[int],
        over_arch_layer_sizes: List[int],
        dcn_num_layers: int = 3,
        dcn_low_rank_dim: Optional[int] = None,
        user_embedding_dim: int = 0,
        tasks: Sequence[str] = ("click",),
        dense_device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        self.embedding_bag_collection = embedding_bag_collection
        configs = embedding_bag_collection.embedding_bag_configs()
        self.sparse_feature_names: List[str] = [
            name for config in configs for name in config.feature_names
        ]
        sparse_width = sum(c.embedding_dim * len(c.feature_names) for c in configs)
        self.dense_in_features = dense_in_features
        self.user_embedding_dim = user_embedding_dim
        self.dense_norm = nn.BatchNorm1d(dense_in_features, device=dense_device)
        self.dense_arch: nn.Module = (
            DenseArch(dense_in_features, dense_arch_layer_sizes, dense_device)
            if dense_arch_layer_sizes
            else nn.Identity()
        )
        dense_width = dense_arch_layer_sizes[-1] if dense_arch_layer_sizes else dense_in_features
        self.sequence_encoder = sequence_encoder
        cross_width = (
            dense_width + sparse_width + int(sequence_encoder.output_dim) + user_embedding_dim
        )
        self.crossnet: nn.Module = (
            FullRankCrossNet(cross_width, dcn_num_layers)
            if dcn_low_rank_dim is None
            else LowRankCrossNet(cross_width, dcn_num_layers, dcn_low_rank_dim)
        )
        if dense_device is not None:
            self.crossnet.to(dense_device)
        self.over_arch = MLP(cross_width, over_arch_layer_sizes, device=dense_device)
        self.heads = TaskHeads(over_arch_layer_sizes[-1], tasks, device=dense_device)

    @property
    def tasks(self) -> List[str]:
        return self.heads.tasks

    @property
    def dense_width(self) -> int:
        """Columns of ``dense_features``: the dense features, then the user vector."""
        return self.dense_in_features + self.user_embedding_dim

    def forward(
        self,
        dense_features: torch.Tensor,
        sparse_features: KeyedJaggedTensor,
        sequence_features: KeyedJaggedTensor,
    ) -> torch.Tensor:
        """
        Args:
            dense_features (torch.Tensor): [B, dense_in_features + user_embedding_dim].
            sparse_features (KeyedJaggedTensor): the EBC's features.
            sequence_features (KeyedJaggedTensor): the sequence encoder's input.

        Returns:
            torch.Tensor: logits [B, len(tasks)].
        """
        check_model_inputs(
            "TransActDCN",
            dense_features,
            sparse_features,
            self.dense_width,
            self.sparse_feature_names,
        )
        return self.logits_from_embeddings(
            dense_features,
            self.embedding_bag_collection(sparse_features).values(),
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
            dense_features (torch.Tensor): [B, dense_in_features + user_embedding_dim].
            sparse_embeddings (torch.Tensor): [B, sum of feature widths], pooled
                embeddings in ``sparse_feature_names`` order.
            sequence_output (torch.Tensor): [B, sequence_encoder.output_dim].

        Returns:
            torch.Tensor: logits [B, len(tasks)].
        """
        dense, user = dense_features.split(
            [self.dense_in_features, self.user_embedding_dim], dim=1
        )
        features = torch.cat(
            [self.dense_arch(self.dense_norm(dense)), sparse_embeddings, sequence_output, user],
            dim=1,
        )
        return self.heads(self.over_arch(self.crossnet(features)))
