#!/usr/bin/env python3
"""Length-bucketed padding of jagged token sequences.

Attention needs rectangles; the rest of the encoder does not care. Padding a whole batch to
its longest sequence wastes most of the compute when lengths are skewed (mean 30 of 100),
so examples are sorted by length and cut into a few buckets, each padded only to its own
longest sequence::

    lengths (sorted)  100 97 90 | 41 35 30 | 12 9 4 | 1 1
    bucket              L=100   |   L=41   |  L=12  | L=1

Empty sequences are left out of every bucket: their encoder output is defined as zeros.
The buckets of one batch live in one flat buffer, so one ``index_copy`` pads every bucket.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch


@dataclass
class LengthBuckets:
    """Where each token of a jagged batch sits in the bucketed, padded layout.

    Args:
        order (torch.Tensor): int64 [E], the non-empty examples, longest first.
        sorted_lengths (torch.Tensor): int64 [E], their lengths.
        token_row (torch.Tensor): int64 [M], row of each token in the flat padded buffer.
        shapes (List[Tuple[int, int]]): (examples, padded length) of each bucket, in order.
        shortest (List[int]): the shortest length in each bucket.
    """

    order: torch.Tensor
    sorted_lengths: torch.Tensor
    token_row: torch.Tensor
    shapes: List[Tuple[int, int]]
    shortest: List[int]

    @property
    def num_rows(self) -> int:
        return sum(b * n for b, n in self.shapes)


def length_buckets(
    lengths: torch.Tensor,
    example_of_token: torch.Tensor,
    position_of_token: torch.Tensor,
    max_buckets: int,
) -> LengthBuckets:
    """Sorts examples by length and cuts them into at most ``max_buckets`` buckets.

    Buckets hold about equal numbers of real tokens; neighbours padded to the same length
    are merged (a batch of full-length sequences is one bucket).

    Args:
        lengths (torch.Tensor): int64 [B], tokens per example.
        example_of_token (torch.Tensor): int64 [M], example of each token.
        position_of_token (torch.Tensor): int64 [M], position of each token in its example.
        max_buckets (int): upper bound on the number of buckets (>= 1).

    Returns:
        LengthBuckets: the layout.

    Example::

        buckets = length_buckets(
            torch.tensor([2, 0, 1]), torch.tensor([0, 0, 2]), torch.tensor([0, 1, 0]), 2
        )
        buckets.shapes  # [(1, 2), (1, 1)]
    """
    order = torch.argsort(lengths, descending=True, stable=True)
    num_nonempty = int((lengths > 0).sum())
    order = order[:num_nonempty]
    sorted_lengths = lengths[order]
    host_lengths: List[int] = sorted_lengths.tolist()

    # Cut where each bucket holds about the same number of real tokens: the long tail
    # then gets narrow buckets, which is where padding would cost most (attention is
    # quadratic in the padded length).
    target = sum(host_lengths) / max(1, max_buckets)
    cuts: List[int] = []
    tokens = 0
    for index, length in enumerate(host_lengths):
        tokens += length
        if tokens >= target and len(cuts) < max_buckets - 1:
            cuts.append(index + 1)
            tokens = 0
    if num_nonempty and (not cuts or cuts[-1] != num_nonempty):
        cuts.append(num_nonempty)
    shapes: List[Tuple[int, int]] = []
    shortest: List[int] = []
    start = 0
    for end in cuts:
        size, padded = end - start, host_lengths[start]
        if shapes and shapes[-1][1] == padded:  # e.g. a batch of full-length sequences
            shapes[-1] = (shapes[-1][0] + size, padded)
        else:
            shapes.append((size, padded))
            shortest.append(padded)
        shortest[-1] = host_lengths[end - 1]
        start = end

    # Row of each example's first token in the flat buffer.
    first_row = torch.empty(num_nonempty, dtype=torch.long)
    start, offset = 0, 0
    for size, padded in shapes:
        first_row[start : start + size] = offset + torch.arange(size) * padded
        start += size
        offset += size * padded
    example_row = torch.zeros(lengths.numel(), dtype=torch.long)
    example_row[order.cpu()] = first_row
    example_row = example_row.to(lengths.device)
    token_row = example_row[example_of_token] + position_of_token
    return LengthBuckets(order, sorted_lengths, token_row, shapes, shortest)


def pad_into_buckets(
    tokens: torch.Tensor, buckets: LengthBuckets
) -> List[Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Scatters jagged tokens into the padded buckets.

    Args:
        tokens (torch.Tensor): [M, D], in any order matching ``buckets.token_row``.
        buckets (LengthBuckets): from :func:`length_buckets`.

    Returns:
        List[Tuple[torch.Tensor, Optional[torch.Tensor]]]: per bucket, the tokens
        [b, L, D] (zeros at padding) and the bool mask [b, L] of real tokens, or None when
        the bucket has no padding (masking it would only cost time).
    """
    rows = tokens.shape[0]
    if (
        len(buckets.shapes) == 1 and buckets.num_rows == rows
        and torch.equal(buckets.token_row, torch.arange(rows, device=tokens.device))
    ):
        flat = tokens  # one bucket without padding, tokens already in its order: no copy
    else:
        # In place into a fresh buffer: index_copy would copy the zeros once more.
        flat = tokens.new_zeros(buckets.num_rows, tokens.shape[1]).index_copy_(0, buckets.token_row, tokens)
    # split, not slicing: the backward of a slice allocates a zeroed gradient of the
    # whole buffer per bucket, the backward of split concatenates once.
    parts = flat.split([size * padded for size, padded in buckets.shapes])
    out: List[Tuple[torch.Tensor, Optional[torch.Tensor]]] = []
    example = 0
    for part, (size, padded), shortest in zip(parts, buckets.shapes, buckets.shortest):
        valid: Optional[torch.Tensor] = None
        if shortest < padded:
            steps = torch.arange(padded, device=tokens.device)
            valid = steps[None, :] < buckets.sorted_lengths[example : example + size, None]
        out.append((part.view(size, padded, tokens.shape[1]), valid))
        example += size
    return out
