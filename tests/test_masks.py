"""Jagged keep masks and length buckets against plain Python references."""

import torch

from torchrec_transact.modules.jagged import length_buckets, pad_into_buckets
from torchrec_transact.modules.masks import compact, keep_actions, rank_within_segments, segment_ids


def test_rank_within_segments_matches_python() -> None:
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([0, 5, 1, 7, 0, 3])
    flags = torch.rand(int(lengths.sum()), generator=g) > 0.4
    segments = segment_ids(lengths)
    rank = rank_within_segments(flags, segments, lengths.numel())
    expected, start = [], 0
    for n in lengths.tolist():
        count = 0
        for i in range(start, start + n):
            expected.append(count)
            count += int(flags[i])
        start += n
    assert rank.tolist() == expected


def test_keep_actions_drops_leakage_then_truncates() -> None:
    ages = torch.tensor([-5.0, 1.0, 2.0, -1.0, 3.0, 4.0, 10.0, 20.0])
    lengths = torch.tensor([6, 0, 2])
    keep = keep_actions(ages, segment_ids(lengths), 3, max_seq_len=3, time_window_s=0.0, training=True)
    # Example 0: leakage out, then the 3 most recent of [1, 2, 3, 4] kept.
    assert keep.tolist() == [False, True, True, False, True, False, True, True]


def test_keep_actions_window_in_training_only() -> None:
    ages = torch.tensor([10.0, 100.0, 1000.0, 5.0, 50.0])
    segments = segment_ids(torch.tensor([3, 2]))
    evaluation = keep_actions(ages, segments, 2, 100, 500.0, training=False)
    assert evaluation.all()
    torch.manual_seed(0)
    training = keep_actions(ages, segments, 2, 100, 500.0, training=True)
    torch.manual_seed(0)
    window = torch.rand(2) * 500.0
    assert training.tolist() == (ages >= window[segments]).tolist()


def test_compact_positions_and_lengths() -> None:
    keep = torch.tensor([False, True, True, True, False, True])
    index, position, lengths = compact(keep, segment_ids(torch.tensor([3, 0, 3])), 3)
    assert index.tolist() == [1, 2, 3, 5]
    assert position.tolist() == [0, 1, 0, 1]
    assert lengths.tolist() == [2, 0, 2]


def test_buckets_round_trip_and_mask() -> None:
    lengths = torch.tensor([3, 0, 1, 5, 2, 5])
    segments = segment_ids(lengths)
    position = rank_within_segments(torch.ones_like(segments, dtype=torch.bool), segments, 6)
    tokens = torch.arange(int(lengths.sum()), dtype=torch.float).unsqueeze(1).repeat(1, 2)
    buckets = length_buckets(lengths, segments, position, max_buckets=3)
    assert buckets.order.tolist() == [3, 5, 0, 4, 2]
    # About 16 / 3 real tokens per bucket; the two length-5 examples need no mask.
    assert buckets.shapes == [(2, 5), (3, 3)]
    assert buckets.shortest == [5, 1]
    padded = pad_into_buckets(tokens, buckets)
    assert padded[0][1] is None
    rows = []
    for x, valid in padded:
        mask = torch.ones(x.shape[:2], dtype=torch.bool) if valid is None else valid
        rows.extend(x[i][mask[i]][:, 0].tolist() for i in range(x.shape[0]))
    offsets = torch.cumsum(lengths, 0) - lengths
    for example, row in zip(buckets.order.tolist(), rows):
        start = int(offsets[example])
        assert row == list(range(start, start + int(lengths[example])))


def test_skewed_lengths_cost_far_less_padding_than_one_rectangle() -> None:
    """The work of the encoder is proportional to padded rows: short batches cost less."""
    g = torch.Generator().manual_seed(0)
    u = torch.rand(512, generator=g)
    lengths = (-30.0 * torch.log1p(-u)).ceil().clamp(1, 100).long()
    segments = segment_ids(lengths)
    position = rank_within_segments(torch.ones_like(segments, dtype=torch.bool), segments, 512)
    real = int(lengths.sum())
    bucketed = length_buckets(lengths, segments, position, max_buckets=8).num_rows
    one = length_buckets(lengths, segments, position, max_buckets=1).num_rows
    assert one == 512 * int(lengths.max())
    assert bucketed < 1.35 * real
    assert bucketed < 0.45 * one
