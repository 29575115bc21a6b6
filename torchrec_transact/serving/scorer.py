#!/usr/bin/env python3
"""The request scorer: a ranking model on one request's plain tensors.

One fused lookup for every categorical feature (:class:`FusedEmbeddingLookup`), one item
lookup of the L sequence and N candidate ids, the user-side dedup of
:class:`~torchrec_transact.serving.dedup.RequestTransAct`, then the model's
``logits_from_embeddings``. Shapes follow from (N, L) with no data-dependent control flow,
so ``torch.export`` saves the scorer and a CUDA graph captures it.
"""

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact.models.protocol import RankingModel
from torchrec_transact.modules.compiled import CompiledOrEager
from torchrec_transact.modules.quantized import Int8RowwiseTable
from torchrec_transact.serving.dedup import RequestTransAct


class FusedEmbeddingLookup(nn.Module):
    """Every categorical feature of an ``EmbeddingBagCollection`` in one lookup per width.

    The tables of one width are concatenated into one matrix and each feature's ids are
    offset to its table's rows, so F features take one gather (one kernel on a GPU)
    instead of F. The collection's tables are then re-pointed to views of the fused
    matrices: one copy of the weights in memory, and the collection still works.

    Args:
        ebc (EmbeddingBagCollection): the trained, unsharded collection.

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="a", embedding_dim=4, num_embeddings=10, feature_names=["f1"]),
            EmbeddingBagConfig(name="b", embedding_dim=4, num_embeddings=5, feature_names=["f2"]),
        ])
        lookup = FusedEmbeddingLookup(ebc)
        lookup(torch.tensor([[3, 1], [9, 4]])).shape  # torch.Size([2, 8])
    """

    def __init__(self, ebc: EmbeddingBagCollection) -> None:
        super().__init__()
        self.feature_names: List[str] = []
        self.num_embeddings: List[int] = []
        group_of_width: Dict[int, int] = {}
        tables: List[List[torch.Tensor]] = []
        offsets: List[List[int]] = []
        columns: List[List[int]] = []
        # (group, index within group) of every feature, in feature order.
        self._placement: List[Tuple[int, int]] = []
        for config in ebc.embedding_bag_configs():
            weight = ebc.embedding_bags[config.name].weight.detach()
            group = group_of_width.setdefault(config.embedding_dim, len(group_of_width))
            if group == len(tables):
                tables.append([])
                offsets.append([])
                columns.append([])
            start = sum(t.shape[0] for t in tables[group])
            tables[group].append(weight)
            for name in config.feature_names:
                self._placement.append((group, len(columns[group])))
                columns[group].append(len(self.feature_names))
                offsets[group].append(start)
                self.feature_names.append(name)
                self.num_embeddings.append(config.num_embeddings)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.cat(t), requires_grad=False) for t in tables]
        )
        starts = {g: 0 for g in range(len(tables))}
        for config in ebc.embedding_bag_configs():
            group = group_of_width[config.embedding_dim]
            rows = slice(starts[group], starts[group] + config.num_embeddings)
            ebc.embedding_bags[config.name].weight = nn.Parameter(
                self.weights[group][rows], requires_grad=False
            )
            starts[group] = rows.stop
        for group in range(len(tables)):
            device = self.weights[group].device
            self.register_buffer(
                f"offsets_{group}", torch.tensor(offsets[group], device=device), persistent=False
            )
            self.register_buffer(
                f"columns_{group}", torch.tensor(columns[group], device=device), persistent=False
            )
        self._single_group_in_order = len(tables) == 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """
        Args:
            ids (torch.Tensor): int64 [B, F], one id per feature, ``feature_names`` order.

        Returns:
            torch.Tensor: [B, sum of widths], the features' embeddings side by side.
        """
        if self._single_group_in_order:
            return F.embedding(ids + self.offsets_0, self.weights[0]).flatten(1)
        looked_up = [
            F.embedding(
                ids.index_select(1, getattr(self, f"columns_{g}")) + getattr(self, f"offsets_{g}"),
                weight,
            )
            for g, weight in enumerate(self.weights)
        ]
        return torch.cat([looked_up[g][:, i] for g, i in self._placement], dim=1)


def supports_request_scoring(model: RankingModel) -> bool:
    """Whether :class:`RequestScorer` can serve the model's sequence encoder: the
    transformer family (TransAct, VanillaTransformer, BST) and NoSequence."""
    encoder = model.sequence_encoder
    return encoder.transformer is not None or encoder.output_dim == 0


class RequestScorer(nn.Module):
    """A ranking model (``TransActDCN`` / ``TransActDLRM``) on one request's tensors.

    Takes plain tensors with shapes fixed by (N, L) and no data-dependent control flow:
    ``torch.export`` saves it, a CUDA graph captures it. Its probabilities equal the
    model's on the batch that repeats the request's sequence for each candidate.

    Args:
        model (RankingModel): the trained, unsharded model, in evaluation mode.
        dedup (bool): share the first encoder layer's user part across candidates.
        int8_items (bool): look the items up in a row-wise int8 copy of the item table
            (:class:`~torchrec_transact.modules.quantized.Int8RowwiseTable`, 3.6x smaller).

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=10, feature_names=["c1"]),
        ])
        transact = TransAct(TransActConfig(num_action_types=3, num_items=10, latest_k=2))
        model = TransActDCN(ebc, transact, 4, [8], [16], user_embedding_dim=0, tasks=["click"])
        scorer = RequestScorer(model.eval())
        probabilities = scorer(
            dense=torch.randn(5, 4), sparse_ids=torch.randint(0, 10, (5, 1)),
            candidate_ids=torch.randint(0, 10, (5,)),
            action_types=torch.tensor([1, 0, 2]), item_ids=torch.tensor([4, 4, 7]),
        )  # [5, 1]
    """

    def __init__(self, model: RankingModel, dedup: bool = True, int8_items: bool = False) -> None:
        super().__init__()
        if not supports_request_scoring(model):
            raise ValueError(
                f"RequestScorer serves the transformer encoders and NoSequence, not "
                f"{type(model.sequence_encoder).__name__}; score it with the model's own "
                "forward (Predictor.score_naive)"
            )
        self.model = model
        self.sparse_lookup = FusedEmbeddingLookup(model.embedding_bag_collection)
        transformer = model.sequence_encoder.transformer
        self.request_encoder: Optional[RequestTransAct] = None
        if transformer is not None:
            self.request_encoder = RequestTransAct(transformer, dedup)
        self._compiled: Optional[CompiledOrEager] = None
        # Row-wise int8 item vectors (TransAct V2's storage): a frozen copy of the table.
        self.int8_items: Optional[Int8RowwiseTable] = (
            Int8RowwiseTable(model.sequence_encoder.item_table) if int8_items and transformer is not None else None
        )

    def compile_encoder(self, enabled: bool = True) -> "RequestScorer":
        """Runs the request encoder through ``torch.compile`` (inductor, dynamic shapes:
        the candidate count and the sequence length vary by request); a failed compile
        warns once and runs eager, which computes the same function (a test compares
        them). torch.export of the scorer traces the eager module.

        Args:
            enabled (bool): False returns to the eager path.

        Returns:
            RequestScorer: ``self``.
        """
        self._compiled = (
            CompiledOrEager(_encode_request, "the request encoder", dynamic=True)
            if enabled and self.request_encoder is not None
            else None
        )
        return self

    def forward(
        self,
        dense: torch.Tensor,
        sparse_ids: torch.Tensor,
        candidate_ids: torch.Tensor,
        action_types: torch.Tensor,
        item_ids: torch.Tensor,
        length: Optional[torch.Tensor] = None,
        lifelong_action_types: Optional[torch.Tensor] = None,
        lifelong_item_ids: Optional[torch.Tensor] = None,
        impression_item_ids: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            dense (torch.Tensor): float [N, W].
            sparse_ids (torch.Tensor): int64 [N, F], ``sparse_lookup.feature_names`` order.
            candidate_ids (torch.Tensor): int64 [N].
            action_types (torch.Tensor): int64 [L], most recent first.
            item_ids (torch.Tensor): int64 [L].
            length (Optional[torch.Tensor]): int64 [], real actions; None: all L.
            lifelong_action_types (Optional[torch.Tensor]): int64 [Ll], TransAct V2's
                lifelong history, most recent first, leakage removed (a V2 model).
            lifelong_item_ids (Optional[torch.Tensor]): int64 [Ll].
            impression_item_ids (Optional[torch.Tensor]): int64 [Li], most recent first.

        Returns:
            torch.Tensor: float [N, T], per-task probabilities.
        """
        num_candidates = candidate_ids.shape[0]
        if self.request_encoder is None:
            sequence = dense.new_zeros(num_candidates, 0)
        else:
            # One lookup for the sequences and the candidates, each user item once.
            frozen = getattr(self.model.sequence_encoder, "lifelong_items", None)
            shared_lifelong = lifelong_item_ids if frozen is None else None
            extra = [t for t in (shared_lifelong, impression_item_ids) if t is not None]
            ids = torch.cat([item_ids, candidate_ids, *extra])
            items = (self.int8_items(ids) if self.int8_items is not None
                     else F.embedding(ids, self.model.sequence_encoder.item_table))
            sequence_items, candidates, *extra_items = items.split(
                [item_ids.shape[0], num_candidates, *(t.shape[0] for t in extra)])
            if self.model.sequence_encoder.config.side_sequences:
                if lifelong_item_ids is None and impression_item_ids is None:
                    raise ValueError("a TransAct V2 model needs its lifelong or impression ids (empty tensors for none)")
                if length is not None:  # padded realtime positions are not actions here
                    action_types, sequence_items = action_types[: int(length)], sequence_items[: int(length)]
                sides = iter(extra_items)
                lifelong_items = next(sides) if shared_lifelong is not None else None
                impression_items = next(sides) if impression_item_ids is not None else None
                lifelong_candidates = None
                if frozen is not None and lifelong_item_ids is not None:  # the frozen pretrained table
                    lifelong_items, lifelong_candidates = self._frozen_lookup(frozen, lifelong_item_ids, candidate_ids)
                sequence = self.request_encoder.with_side_sequences(
                    action_types, sequence_items, candidates, lifelong_action_types, lifelong_items, impression_items,
                    lifelong_candidates)
            elif self._compiled is not None:
                sequence = self._compiled(self.request_encoder, action_types, sequence_items, candidates, length)
            else:
                sequence = self.request_encoder(action_types, sequence_items, candidates, length)
        logits = self.model.logits_from_embeddings(dense, self.sparse_lookup(sparse_ids), sequence)
        return torch.sigmoid(logits.float())


    def _frozen_lookup(
        self, frozen: nn.Module, lifelong_item_ids: torch.Tensor, candidate_ids: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """The lifelong items' and the candidates' vectors in a V2 model's frozen table
        (torchrec's quantised collection: one KJT, each key one row of ids)."""
        config = self.model.sequence_encoder.config
        keys = [config.lifelong_item_feature, config.candidate_feature]
        found = frozen(KeyedJaggedTensor(
            keys=keys, values=torch.cat([lifelong_item_ids, candidate_ids]),
            lengths=torch.tensor([lifelong_item_ids.shape[0], candidate_ids.shape[0]]),
        ))
        return found[keys[0]].values(), found[keys[1]].values()


def _encode_request(
    encoder: RequestTransAct,
    action_types: torch.Tensor,
    item_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
    length: Optional[torch.Tensor],
) -> torch.Tensor:
    """``encoder(...)`` as a function of the module (what ``RequestScorer.compile_encoder``
    compiles)."""
    return encoder(action_types, item_embeddings, candidate_embeddings, length)
