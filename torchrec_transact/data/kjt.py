#!/usr/bin/env python3
"""Builders of the ``KeyedJaggedTensor`` inputs: the action sequences that
:class:`TransAct` reads, the one-id-per-feature categorical features an
``EmbeddingBagCollection`` pools, and the repeat of a request's sequence per candidate."""

from dataclasses import dataclass
from typing import Sequence, Optional, Tuple

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


def sequence_kjt(
    action_types: torch.Tensor,
    item_ids: torch.Tensor,
    ages_s: torch.Tensor,
    lengths: torch.Tensor,
    candidate_ids: torch.Tensor,
    keys: Tuple[str, str, str] = ("action_type", "item_id", "candidate_item_id"),
) -> KeyedJaggedTensor:
    """Packs jagged action sequences and candidates into one KJT.

    Args:
        action_types (torch.Tensor): int [N], most recent action first within an example.
        item_ids (torch.Tensor): int [N], the engaged item of each action.
        ages_s (torch.Tensor): float [N], request time minus action time, in seconds.
        lengths (torch.Tensor): int [B], actions per example.
        candidate_ids (torch.Tensor): int [B], one candidate item per example.
        keys (Tuple[str, str, str]): action, item and candidate keys.

    Returns:
        KeyedJaggedTensor: keys ``keys``; weights are the ages on the action and item
        keys and 0 on the candidate key.

    Example::

        kjt = sequence_kjt(
            action_types=torch.tensor([1, 0, 2]),
            item_ids=torch.tensor([17, 5, 3]),
            ages_s=torch.tensor([30.0, 600.0, 12.0]),
            lengths=torch.tensor([2, 1]),
            candidate_ids=torch.tensor([42, 7]),
        )
        kjt["item_id"].weights()  # tensor([ 30., 600.,  12.])
    """
    ages_s = ages_s.float()
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys),
        values=torch.cat([action_types, item_ids, candidate_ids]).long(),
        lengths=torch.cat([lengths, lengths, torch.ones_like(lengths)]).int(),
        weights=torch.cat([ages_s, ages_s, ages_s.new_zeros(candidate_ids.numel())]),
    )


@dataclass
class SideSequenceValues:
    """A jagged sequence of another kind (TransAct V2's lifelong actions, or impressions)
    for :func:`with_side_sequences`, most recent first within an example.

    Args:
        keys (Tuple[str, ...]): one key per tensor of ``values``: action types and items
            (lifelong), or items alone (impressions).
        values (Tuple[torch.Tensor, ...]): int [N] each.
        ages_s (torch.Tensor): float [N].
        lengths (torch.Tensor): int [B].
    """

    keys: Tuple[str, ...]
    values: Tuple[torch.Tensor, ...]
    ages_s: torch.Tensor
    lengths: torch.Tensor


def with_side_sequences(kjt: KeyedJaggedTensor, sides: Sequence[SideSequenceValues]) -> KeyedJaggedTensor:
    """``kjt`` with more keys appended: each side sequence's keys, ages as their weights.

    Args:
        kjt (KeyedJaggedTensor): a weighted KJT (:func:`sequence_kjt`).
        sides (Sequence[SideSequenceValues]): the sequences to add.

    Returns:
        KeyedJaggedTensor: the keys of ``kjt``, then those of each side sequence.

    Example::

        kjt = sequence_kjt(torch.tensor([1]), torch.tensor([17]), torch.tensor([30.0]),
                           torch.tensor([1]), torch.tensor([42]))
        shown = SideSequenceValues(("impression_item_id",), (torch.tensor([5, 6]),),
                                   torch.tensor([60.0, 90.0]), torch.tensor([2]))
        with_side_sequences(kjt, [shown])["impression_item_id"].weights()  # tensor([60., 90.])
    """
    keys, values, lengths, weights = list(kjt.keys()), [kjt.values()], [kjt.lengths()], [kjt.weights()]
    for side in sides:
        for key, ids in zip(side.keys, side.values):
            keys.append(key)
            values.append(ids.long())
            lengths.append(side.lengths.to(kjt.lengths().dtype))
            weights.append(side.ages_s.float())
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.cat(values), lengths=torch.cat(lengths), weights=torch.cat(weights)
    )


def categorical_kjt(keys: Sequence[str], ids: torch.Tensor) -> KeyedJaggedTensor:
    """One id per feature and example, as the KJT an ``EmbeddingBagCollection`` pools.

    Args:
        keys (Sequence[str]): F feature names, the columns of ``ids``.
        ids (torch.Tensor): int [B, F].

    Returns:
        KeyedJaggedTensor: F keys, every length 1.

    Example::

        kjt = categorical_kjt(["user", "item"], torch.tensor([[3, 7], [4, 8]]))
        kjt["item"].values()  # tensor([7, 8])
    """
    if ids.dim() != 2 or ids.shape[1] != len(keys):
        raise ValueError(f"ids have shape {tuple(ids.shape)}, expected [B, {len(keys)}] for keys {list(keys)}")
    return KeyedJaggedTensor.from_lengths_sync(
        keys=list(keys),
        values=ids.t().reshape(-1).long(),
        lengths=torch.ones(ids.numel(), dtype=torch.int32),
    )


def repeat_per_candidate(
    lengths: torch.Tensor, candidates_per_request: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where each request's jagged sequence goes when it is repeated once per candidate
    (every example of a request carries the request's sequence).

    Args:
        lengths (torch.Tensor): int [R], sequence length of each request.
        candidates_per_request (torch.Tensor): int [R], the request's candidates.

    Returns:
        Tuple[torch.Tensor, torch.Tensor]: ``index`` int64 [sum of lengths x candidates]
        into the requests' flat values, and the examples' ``lengths`` int64 [sum of
        candidates]: ``values[index]`` with those lengths is the repeated sequence.

    Example::

        index, lengths = repeat_per_candidate(torch.tensor([2, 1]), torch.tensor([2, 3]))
        index    # tensor([0, 1, 0, 1, 2, 2, 2])
        lengths  # tensor([2, 2, 1, 1, 1])
    """
    lengths = lengths.long()
    counts = candidates_per_request.long()
    starts = torch.cumsum(lengths, 0) - lengths
    example_lengths = torch.repeat_interleave(lengths, counts)
    example_starts = torch.repeat_interleave(starts, counts)
    total = int(example_lengths.sum())
    # Position of each repeated value within its example, then its source position.
    first = torch.cumsum(example_lengths, 0) - example_lengths
    within = torch.arange(total) - torch.repeat_interleave(first, example_lengths)
    return torch.repeat_interleave(example_starts, example_lengths) + within, example_lengths


@dataclass
class SequenceFeatures:
    """Jagged action sequences of one batch, plus their padded view for references.

    Args:
        action_types (torch.Tensor): int64 [N].
        item_ids (torch.Tensor): int64 [N].
        ages_s (torch.Tensor): float [N], non-decreasing within an example.
        lengths (torch.Tensor): int64 [B].
        candidate_ids (torch.Tensor): int64 [B].
    """

    action_types: torch.Tensor
    item_ids: torch.Tensor
    ages_s: torch.Tensor
    lengths: torch.Tensor
    candidate_ids: torch.Tensor

    def kjt(self) -> KeyedJaggedTensor:
        return sequence_kjt(
            self.action_types, self.item_ids, self.ages_s, self.lengths, self.candidate_ids
        )

    def padded(
        self, max_seq_len: int
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Zero-padded [B, max_seq_len] actions, items, ages and the valid mask."""
        batch_size = self.lengths.numel()
        steps = torch.arange(max_seq_len)
        valid = steps[None, :] < self.lengths[:, None]
        offsets = torch.cumsum(self.lengths, 0) - self.lengths
        index = (offsets[:, None] + steps[None, :]).clamp(max=max(0, self.ages_s.numel() - 1))
        out = []
        for values in (self.action_types, self.item_ids, self.ages_s):
            if values.numel() == 0:
                out.append(torch.zeros(batch_size, max_seq_len, dtype=values.dtype))
            else:
                out.append(values[index] * valid.to(values.dtype))
        return out[0], out[1], out[2], valid


def random_sequence_features(
    lengths: torch.Tensor,
    num_action_types: int,
    num_items: int,
    max_gap_s: float = 3600.0,
    generator: Optional[torch.Generator] = None,
) -> SequenceFeatures:
    """Uniformly random ids with increasing ages, for tests and benchmarks.

    This is not a model of user behaviour (see ``SyntheticActionData`` for one); it only
    produces well-formed input of given lengths.

    Args:
        lengths (torch.Tensor): int [B], actions per example.
        num_action_types (int): action ids are drawn from [0, num_action_types).
        num_items (int): item and candidate ids are drawn from [0, num_items).
        max_gap_s (float): gaps between consecutive actions are U[0, max_gap_s).
        generator (Optional[torch.Generator]): random source.

    Returns:
        SequenceFeatures: the batch.

    Example::

        g = torch.Generator().manual_seed(0)
        batch = random_sequence_features(torch.tensor([3, 0, 1]), 4, 100, generator=g)
        batch.kjt().keys()  # ['action_type', 'item_id', 'candidate_item_id']
    """
    lengths = lengths.long()
    total = int(lengths.sum())
    gaps = torch.rand(total, generator=generator) * max_gap_s
    # Ages grow along each example: a running sum of gaps restarted at every example.
    running = torch.cumsum(gaps, 0)
    starts = torch.cumsum(lengths, 0) - lengths
    example = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    before = torch.cat([torch.zeros(1), running])[starts]
    ages = running - before[example]
    return SequenceFeatures(
        action_types=torch.randint(0, num_action_types, (total,), generator=generator),
        item_ids=torch.randint(0, num_items, (total,), generator=generator),
        ages_s=ages,
        lengths=lengths,
        candidate_ids=torch.randint(0, num_items, (lengths.numel(),), generator=generator),
    )
