#!/usr/bin/env python3
"""A small learnable task for the quick start and for tests of learning.

Items belong to categories (``item_id % num_categories``). A user's history mixes positive
actions (click, save) and negative ones (hide); the label of a candidate is 1 when it
shares the category of the user's most recent *positive* action. Half of the candidates
are drawn from that category, so the task is balanced, and only a model that reads the
sequence (which action came last, and whether it was positive) can solve it.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact.data.batch import CANDIDATE_ITEM_FEATURE, TransActBatch
from torchrec_transact.data.kjt import categorical_kjt, sequence_kjt
from torchrec_transact.data.synthetic import category_item_embeddings
from torchrec_transact.data.tasks import CLICK, HIDE, PINTEREST_ACTIONS, SAVE



@dataclass
class CategoryMatchTask:
    """Generator of (sequence KJT, label) batches.

    Args:
        num_items (int): item vocabulary; ``item_id % num_categories`` is the category.
        num_categories (int): number of item categories.
        max_seq_len (int): sequences have 1..max_seq_len actions.
        hide_rate (float): share of actions that are hides (negative feedback).
        mean_gap_s (float): mean time between consecutive actions, in seconds.

    Example::

        task = CategoryMatchTask(num_items=1000)
        features, labels = task.batch(8, torch.Generator().manual_seed(0))
        labels.shape  # torch.Size([8])
    """

    num_items: int = 1000
    num_categories: int = 20
    max_seq_len: int = 50
    hide_rate: float = 0.3
    mean_gap_s: float = 3 * 3600.0

    @property
    def num_action_types(self) -> int:
        return len(PINTEREST_ACTIONS)

    def item_embeddings(
        self, dim: int, noise: float = 0.3, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """Pretrained-style item vectors in which a category is a cluster, [num_items, dim]
        (the stand-in for the paper's PinSage embeddings)."""
        return category_item_embeddings(
            self.num_items, self.num_categories, dim, noise, generator
        )

    def batch(
        self, batch_size: int, generator: Optional[torch.Generator] = None
    ) -> Tuple[KeyedJaggedTensor, torch.Tensor]:
        """
        Args:
            batch_size (int): examples.
            generator (Optional[torch.Generator]): random source.

        Returns:
            Tuple[KeyedJaggedTensor, torch.Tensor]: the TransAct input and float labels [B].
        """
        g = generator
        lengths = torch.randint(1, self.max_seq_len + 1, (batch_size,), generator=g)
        total = int(lengths.sum())
        items = torch.randint(0, self.num_items, (total,), generator=g)
        hides = torch.rand(total, generator=g) < self.hide_rate
        positive_type = torch.randint(CLICK, SAVE + 1, (total,), generator=g)
        actions = torch.where(hides, torch.full_like(positive_type, HIDE), positive_type)
        gaps = -self.mean_gap_s * torch.log1p(-torch.rand(total, generator=g))
        starts = torch.cumsum(lengths, 0) - lengths
        example = torch.repeat_interleave(torch.arange(batch_size), lengths)
        running = torch.cumsum(gaps, 0)
        ages = running - torch.cat([torch.zeros(1), running])[starts][example]

        # Most recent positive action of each example (the first one, most recent first).
        positive_rank = torch.where(hides, total, torch.arange(total))
        first_positive = torch.full((batch_size,), total, dtype=torch.long)
        first_positive.scatter_reduce_(0, example, positive_rank, "amin")
        has_positive = first_positive < total
        target_category = torch.where(
            has_positive,
            items[first_positive.clamp(max=total - 1)] % self.num_categories,
            torch.full((batch_size,), -1, dtype=torch.long),
        )
        match = torch.rand(batch_size, generator=g) < 0.5
        random_candidates = torch.randint(0, self.num_items, (batch_size,), generator=g)
        in_category = (
            torch.randint(0, self.num_items // self.num_categories, (batch_size,), generator=g)
            * self.num_categories
            + target_category.clamp(min=0)
        )
        candidates = torch.where(match & has_positive, in_category, random_candidates)
        labels = (candidates % self.num_categories == target_category).float()
        return sequence_kjt(actions, items, ages, lengths, candidates), labels

    def ranking_batch(
        self,
        batch_size: int,
        generator: Optional[torch.Generator] = None,
        dense_in_features: int = 13,
    ) -> TransActBatch:
        """The task as a ranking-model batch: the sequence, a categorical feature for the
        candidate id (``candidate_item``) and one for the user (``user_bucket``, noise),
        noise dense features, one task ("click").

        Returns:
            TransActBatch: with labels [B, 1], unit weights, one request per example.
        """
        g = generator
        sequence, labels = self.batch(batch_size, g)
        candidates = sequence[sequence.keys()[2]].values()
        users = torch.randint(0, 100, (batch_size,), generator=g)
        sparse = categorical_kjt([CANDIDATE_ITEM_FEATURE, "user_bucket"], torch.stack([candidates, users], 1))
        return TransActBatch(
            dense_features=torch.randn(batch_size, dense_in_features, generator=g),
            sparse_features=sparse,
            sequence_features=sequence,
            labels=labels.unsqueeze(1),
            weights=torch.ones(batch_size),
            request_ids=torch.arange(batch_size),
        )
