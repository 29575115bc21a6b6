#!/usr/bin/env python3
"""Which actions of a jagged action sequence the encoder sees.

All functions work on the flat jagged layout of one KJT key: ``values`` of length N grouped
into B examples by ``lengths``, most recent action first within each example::

    lengths = [3, 0, 2]
    ages    = [5, 60, 3600 | | -10, 7200]     # seconds before the request
               ex 0          ex1  ex 2

An action is *kept* when (a) it is not leakage (age >= 0), (b) it is among the
``max_seq_len`` most recent non-leakage actions of its example and (c) in training only, it
is older than the example's random time window. Dropped actions are removed, not just
hidden from attention: :func:`compact` turns the keep flags into the positions of the
remaining actions, so the encoder sees exactly the sequence without them.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import nn


def segment_ids(lengths: torch.Tensor) -> torch.Tensor:
    """Example index of each jagged value.

    Args:
        lengths (torch.Tensor): int [B].

    Returns:
        torch.Tensor: int64 [sum(lengths)].

    Example::

        segment_ids(torch.tensor([2, 0, 1]))  # tensor([0, 0, 2])
    """
    return torch.repeat_interleave(
        torch.arange(lengths.numel(), device=lengths.device), lengths
    )


def rank_within_segments(
    flags: torch.Tensor, segments: torch.Tensor, num_segments: int
) -> torch.Tensor:
    """For each value, how many flagged values precede it in its own segment.

    Args:
        flags (torch.Tensor): bool [N].
        segments (torch.Tensor): int64 [N], non-decreasing segment index of each value.
        num_segments (int): B.

    Returns:
        torch.Tensor: int64 [N]; for a flagged value, its 0-based rank among the flagged
        values of its segment.

    Example::

        flags = torch.tensor([True, False, True, True])
        rank_within_segments(flags, torch.tensor([0, 0, 0, 1]), 2)  # tensor([0, 1, 1, 0])
    """
    flags = flags.long()
    running = torch.cumsum(flags, 0) - flags  # flagged values before this one, globally
    per_segment = torch.zeros(num_segments, dtype=torch.long, device=flags.device)
    per_segment.index_add_(0, segments, flags)
    before_segment = torch.cumsum(per_segment, 0) - per_segment
    return running - before_segment[segments]


def keep_actions(
    ages: torch.Tensor,
    segments: torch.Tensor,
    num_examples: int,
    max_seq_len: int,
    time_window_s: float,
    training: bool,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Keep flags of one jagged action sequence (see the module docstring).

    Args:
        ages (torch.Tensor): float [N], request time minus action time, in seconds.
        segments (torch.Tensor): int64 [N], example index of each action.
        num_examples (int): B.
        max_seq_len (int): how many of the most recent actions an example keeps.
        time_window_s (float): upper bound of the training-time window; each example
            draws T ~ U[0, time_window_s) and drops its actions with age < T. 0 disables.
        training (bool): the window applies only in training.
        generator (Optional[torch.Generator]): for the window draw; torch's default
            generator when None, so ``torch.manual_seed`` reproduces a run.

    Returns:
        torch.Tensor: bool [N].

    Example::

        ages = torch.tensor([5.0, 60.0, 3600.0, -10.0, 7200.0])
        segments = torch.tensor([0, 0, 0, 2, 2])
        keep_actions(ages, segments, 3, max_seq_len=2, time_window_s=0.0, training=True)
        # tensor([True, True, False, False, True])
    """
    not_leaked = ages >= 0
    recency = rank_within_segments(not_leaked, segments, num_examples)
    keep = not_leaked & (recency < max_seq_len)
    if training and time_window_s > 0:
        window = torch.rand(
            num_examples, generator=generator, device=ages.device, dtype=ages.dtype
        )
        keep = keep & (ages >= window.mul_(time_window_s)[segments])
    return keep


def compact(
    keep: torch.Tensor, segments: torch.Tensor, num_examples: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Removes the dropped values of a jagged sequence.

    Args:
        keep (torch.Tensor): bool [N].
        segments (torch.Tensor): int64 [N].
        num_examples (int): B.

    Returns:
        Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ``kept_index`` [M] (positions in
        the original values), ``position`` [M] (0-based position of each kept value in
        its compacted sequence, 0 = most recent) and ``kept_lengths`` [B].

    Example::

        keep = torch.tensor([False, True, True, True])
        compact(keep, torch.tensor([0, 0, 0, 1]), 2)
        # (tensor([1, 2, 3]), tensor([0, 1, 0]), tensor([2, 1]))
    """
    position = rank_within_segments(keep, segments, num_examples)
    kept_index = keep.nonzero().squeeze(1)
    kept_lengths = torch.zeros(num_examples, dtype=torch.long, device=keep.device)
    kept_lengths.index_add_(0, segments, keep.long())
    return kept_index, position[kept_index], kept_lengths


@dataclass
class KeptActions:
    """The actions an encoder sees, in the flat jagged layout of the input.

    Args:
        index (torch.Tensor): int64 [M], positions of the kept actions in the KJT values.
        example (torch.Tensor): int64 [M], example of each kept action.
        position (torch.Tensor): int64 [M], 0 = the most recent kept action.
        lengths (torch.Tensor): int64 [B], kept actions per example.
    """

    index: torch.Tensor
    example: torch.Tensor
    position: torch.Tensor
    lengths: torch.Tensor


def kept_actions(
    lengths: torch.Tensor, ages: torch.Tensor, max_seq_len: int, time_window_s: float, training: bool
) -> KeptActions:
    """Leakage out, the ``max_seq_len`` most recent kept, the training window applied.

    Args:
        lengths (torch.Tensor): int [B], actions per example (most recent first).
        ages (torch.Tensor): [M], each action's age in seconds.
        max_seq_len (int): most recent actions kept per example.
        time_window_s (float): training-time window bound (0: none).
        training (bool): the window applies only in training.

    Returns:
        KeptActions: the kept actions.

    Example::

        kept = kept_actions(torch.tensor([2, 1]), torch.tensor([-1.0, 60.0, 5.0]), 10, 0.0, False)
        kept.index  # tensor([1, 2])
    """
    lengths = lengths.long()
    batch_size = lengths.numel()
    segments = segment_ids(lengths)
    keep = keep_actions(
        ages if ages.is_floating_point() else ages.float(),
        segments,
        batch_size,
        max_seq_len,
        time_window_s,
        training,
    )
    index, position, kept_lengths = compact(keep, segments, batch_size)
    return KeptActions(index, segments[index], position, kept_lengths)


def zero_gradient_output(module: nn.Module, out: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``out`` unchanged, on the autograd graph of every trainable parameter of ``module``.

    For a batch with nothing left to encode (the training window can empty a whole
    batch): DDP, under DistributedModelParallel, fails a step in which a parameter gets no
    gradient, so each gets a zero one.

    Args:
        module (nn.Module): the encoder.
        out (torch.Tensor): its output for the batch.
        tokens (torch.Tensor): the (empty) tokens it was given.

    Returns:
        torch.Tensor: ``out``, numerically.

    Example::

        layer = nn.Linear(2, 2)
        out = zero_gradient_output(layer, torch.zeros(3, 2), torch.zeros(0, 2))
        out.sum().backward()
        layer.weight.grad.abs().sum()  # tensor(0.)
    """
    untouched = [p.sum() for p in module.parameters() if p.requires_grad]
    return out + (tokens.sum() + sum(untouched)) * 0.0
