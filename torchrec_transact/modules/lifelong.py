#!/usr/bin/env python3
"""TransAct V2's lifelong sequence: for each example, the few actions of a long history
(O(10^4) per user) that the encoder sees (arXiv 2506.02267).

The lifelong actions arrive in the flat jagged layout of one KJT key, most recent first,
ages in the weights (see :mod:`torchrec_transact.modules.masks`). Leakage (age < 0) is
never eligible, and only the ``max_len`` most recent remaining actions are. Of those, an
example keeps ``k``:

* ``"nearest"``: the actions whose item vectors have the highest dot product with the
  candidate's, ties broken by recency (the more recent wins);
* ``"recent"``: the ``k`` most recent (the ablation's control).

The selection is batched over the jagged values: one similarity per action (its item
vector against its own example's candidate, one batched matrix-vector product, never a
copy of the candidate per action), one
``topk`` on a [B, L] score matrix for the k-th best score of each example, and the ties at
that score resolved by rank within the example. Selected actions stay in recency order.
"""

from typing import Optional

import torch

from torchrec_transact.modules.config import LIFELONG_SELECTIONS
from torchrec_transact.modules.masks import compact, keep_actions, KeptActions, rank_within_segments, segment_ids


def select_lifelong(
    lengths: torch.Tensor,
    ages: torch.Tensor,
    k: int,
    max_len: int,
    selection: str = "nearest",
    item_embeddings: Optional[torch.Tensor] = None,
    candidate_embeddings: Optional[torch.Tensor] = None,
) -> KeptActions:
    """The ``k`` lifelong actions each example's encoder sees (see the module docstring).

    Args:
        lengths (torch.Tensor): int [B], lifelong actions per example, most recent first.
        ages (torch.Tensor): float [M], each action's age in seconds.
        k (int): actions selected per example (fewer where fewer are eligible).
        max_len (int): only the ``max_len`` most recent non-leakage actions are eligible.
        selection (str): ``"nearest"`` or ``"recent"``.
        item_embeddings (Optional[torch.Tensor]): [M, d], each action's item vector
            (``"nearest"`` only).
        candidate_embeddings (Optional[torch.Tensor]): [B, d] (``"nearest"`` only).

    Returns:
        KeptActions: the selected actions, in recency order within each example.

    Example::

        items = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [1.0, 0.0]])
        kept = select_lifelong(
            torch.tensor([3, 1]), torch.tensor([10.0, 20.0, 30.0, -5.0]), k=1, max_len=100,
            item_embeddings=items, candidate_embeddings=torch.tensor([[0.0, 1.0], [1.0, 0.0]]),
        )
        kept.index  # tensor([1]): example 0's item nearest to its candidate; example 1's
                    # only action is leakage
    """
    if selection not in LIFELONG_SELECTIONS:
        raise ValueError(f"selection={selection!r}, expected one of {LIFELONG_SELECTIONS}")
    lengths = lengths.long()
    batch_size = lengths.numel()
    segments = segment_ids(lengths)
    eligible = keep_actions(ages if ages.is_floating_point() else ages.float(), segments, batch_size, max_len,
                            0.0, training=False)
    if selection == "recent":
        keep = eligible & (rank_within_segments(eligible, segments, batch_size) < k)
    else:
        if item_embeddings is None or candidate_embeddings is None:
            raise ValueError('selection="nearest" needs item_embeddings and candidate_embeddings')
        keep = _nearest(eligible, segments, lengths, k, item_embeddings, candidate_embeddings)
    index, position, kept_lengths = compact(keep, segments, batch_size)
    return KeptActions(index, segments[index], position, kept_lengths)


@torch.no_grad()
def _nearest(
    eligible: torch.Tensor,
    segments: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    item_embeddings: torch.Tensor,
    candidate_embeddings: torch.Tensor,
) -> torch.Tensor:
    """Keep flags of the k eligible actions per example with the highest similarity."""
    batch_size = lengths.numel()
    if k == 0 or eligible.numel() == 0:
        return torch.zeros_like(eligible)
    # Each action's similarity to its own example's candidate as one batched matrix-vector
    # product over the [B, L, d] padded actions (a view when every example has L), not a
    # copy of the candidate per action; very skewed lengths keep the copy.
    longest = int(lengths.max())
    offsets = torch.cumsum(lengths, 0) - lengths
    within = torch.arange(segments.numel(), device=segments.device) - offsets[segments]
    items, candidates = item_embeddings.float(), candidate_embeddings.float()
    if bool((lengths == longest).all()):
        scores = torch.bmm(items.view(batch_size, longest, -1), candidates.unsqueeze(-1)).squeeze(-1)  # [B, L]
        similarity = scores.view(-1)
    elif batch_size * longest <= 2 * segments.numel():
        padded = items.new_zeros(batch_size, longest, items.shape[-1])
        padded[segments, within] = items
        similarity = torch.bmm(padded, candidates.unsqueeze(-1)).squeeze(-1)[segments, within]
    else:  # skewed lengths: padding would cost more than a copy of the candidate per action
        similarity = (items * candidates[segments]).sum(-1)
    # A [B, L] matrix, -inf where no action or an ineligible one.
    scores = similarity.new_full((batch_size, longest), float("-inf"))
    scores[segments, within] = similarity.masked_fill(~eligible, float("-inf"))
    return top_k_recent_first(scores, k)[segments, within]


def top_k_recent_first(scores: torch.Tensor, k: int) -> torch.Tensor:
    """bool [R, L]: in each row, the ``k`` highest scores, ties to the lower column (the
    more recent action); an entry at -inf (no action, or not eligible) is never chosen, so
    a row with fewer than ``k`` others keeps them all. The training selection (jagged,
    padded to [B, L]) and the serving scorer ([candidates, Ll]) both select this way.

    Example::

        scores = torch.tensor([[0.5, 0.9, 0.5, 0.1], [0.3, float("-inf"), 0.0, 0.0]])
        top_k_recent_first(scores, 2)  # [[True, True, False, False], [True, False, True, False]]
    """
    kept = min(k, scores.shape[1])
    if kept == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    kth = scores.topk(kept, dim=1, sorted=False).values.amin(1, keepdim=True)
    chosen = scores >= kth
    # Rows to settle: ties at the k-th score (a repeated item), or fewer than k eligible.
    rows = ((chosen.sum(1) != kept) | (kth.squeeze(1) == float("-inf"))).nonzero().squeeze(1)
    if rows.numel():
        row_scores, threshold = scores[rows], kth[rows]
        above = row_scores > threshold
        tied = (row_scores == threshold) & (row_scores > float("-inf"))
        places = kept - above.sum(1, keepdim=True)
        chosen[rows] = above | (tied & (torch.cumsum(tied, 1) - tied.long() < places))
    return chosen
