"""Criteo: raw TSV, torchrec's npy layout, bad lines, synthetic sequences, sharding."""

import os

import numpy as np
import pytest
import torch

from torchrec_transact.data.criteo import (
    CriteoWithSequences,
    read_criteo_npy,
    read_criteo_tsv,
)


@pytest.fixture(scope="module")
def sample(data_dir: str) -> str:
    return os.path.join(data_dir, "criteo_tiny", "train.tsv")


def test_real_sample_round_trip(sample: str) -> None:
    arrays = read_criteo_tsv([sample], table_size=1000)
    assert len(arrays) == 1999 and int(arrays.labels.sum()) == 418
    assert arrays.dense.shape == (1999, 13) and arrays.sparse.shape == (1999, 26)
    assert (arrays.dense >= 0).all() and np.isfinite(arrays.dense).all()
    assert arrays.sparse.min() >= 0 and arrays.sparse.max() < 1000
    # First row: I1 = 1 -> log(2); I12 missing -> 0; I13 = 2 -> log(3); C1 = 68fd1e64.
    assert arrays.dense[0, 0] == pytest.approx(np.log(2.0))
    assert arrays.dense[0, 11] == 0.0
    assert arrays.dense[0, 12] == pytest.approx(np.log(3.0))
    assert arrays.sparse[0, 0] == int("68fd1e64", 16) % 1000
    data = CriteoWithSequences(arrays, batch_size=256, candidate_column=2, table_size=1000)
    batch = next(iter(data))
    assert batch.dense_features.shape == (256, 13) and batch.labels.shape == (256, 1)
    assert batch.sparse_features.keys() == [f"cat_{i}" for i in range(26)]
    assert torch.equal(
        batch.sequence_features["candidate_item_id"].values(),
        batch.sparse_features["cat_2"].values(),
    )
    assert batch.sequence_features["item_id"].values().max() < 1000
    assert sum(b.batch_size for b in data) == 1999


def test_torchrec_npy_layout_matches_the_tsv_reader(sample: str, tmp_path) -> None:
    from torchrec.datasets.criteo import BinaryCriteoUtils

    files = [str(tmp_path / f"day_0_{part}.npy") for part in ("dense", "sparse", "labels")]
    BinaryCriteoUtils.tsv_to_npys(sample, *files)
    from_npy = read_criteo_npy([files[0]], [files[1]], [files[2]], table_size=5000)
    from_tsv = read_criteo_tsv([sample], table_size=5000)
    assert np.array_equal(from_npy.sparse, from_tsv.sparse)
    assert np.array_equal(from_npy.labels, from_tsv.labels)
    assert from_npy.dense.shape == (1999, 13)  # torchrec's own transform of the counts


def test_day_files_are_read_in_order(sample: str, tmp_path) -> None:
    lines = open(sample).read().splitlines(keepends=True)
    for day, part in enumerate((lines[:700], lines[700:])):
        (tmp_path / f"day_{day}").write_text("".join(part))
    both = read_criteo_tsv([str(tmp_path / "day_0"), str(tmp_path / "day_1")], table_size=1000)
    whole = read_criteo_tsv([sample], table_size=1000)
    assert np.array_equal(both.sparse, whole.sparse) and np.array_equal(both.labels, whole.labels)


@pytest.mark.parametrize(
    "line,message",
    [
        ("1\t2\t3\n", "expected 40 tab-separated fields, got 3"),
        ("1" + "\t5" * 13 + "\tzzzz0000" + "\t68fd1e64" * 25 + "\n", "C1 = 'zzzz0000' is not a hex hash"),
        ("0\t1.5" + "\t5" * 12 + "\t68fd1e64" * 26 + "\n", "I1 = '1.5' is not an integer"),
        ("2" + "\t5" * 13 + "\t68fd1e64" * 26 + "\n", "label '2' is not 0 or 1"),
    ],
)
def test_malformed_lines_name_file_and_line_or_are_skipped(
    sample: str, tmp_path, line: str, message: str
) -> None:
    good = open(sample).read().splitlines(keepends=True)[:3]
    path = tmp_path / "bad.tsv"
    path.write_text("".join(good[:2]) + line + good[2])
    with pytest.raises(ValueError, match=rf"bad.tsv:3: .*{message}"):
        read_criteo_tsv([str(path)])
    skipped = read_criteo_tsv([str(path)], skip_bad_lines=True)
    assert len(skipped) == 3 and skipped.skipped_lines == 1


def test_sequences_are_deterministic_sharded_and_carry_the_signal(sample: str) -> None:
    arrays = read_criteo_tsv([sample], table_size=1000)
    a = next(iter(CriteoWithSequences(arrays, 128, table_size=1000, seed=1)))
    b = next(iter(CriteoWithSequences(arrays, 128, table_size=1000, seed=1)))
    c = next(iter(CriteoWithSequences(arrays, 128, table_size=1000, seed=2)))
    assert torch.equal(a.sequence_features.values(), b.sequence_features.values())
    assert not torch.equal(a.sequence_features.values(), c.sequence_features.values())
    ranks = [
        set(torch.cat([x.request_ids for x in CriteoWithSequences(arrays, 100, table_size=1000, rank=r, world_size=2)]).tolist())
        for r in range(2)
    ]
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == set(range(1999))
    # signal = 1: every clicked row's latest positive action shares the candidate's category.
    batch = next(iter(CriteoWithSequences(arrays, 512, table_size=1000, num_categories=10, sequence_signal=1.0)))
    seq = batch.sequence_features
    offsets = torch.cumsum(seq["item_id"].lengths(), 0) - seq["item_id"].lengths()
    actions, items = seq["action_type"].values(), seq["item_id"].values()
    candidates = seq["candidate_item_id"].values()
    for row in torch.nonzero(batch.labels[:, 0] > 0).flatten().tolist():
        start, n = int(offsets[row]), int(seq["item_id"].lengths()[row])
        positive = [k for k in range(n) if actions[start + k] != 2]
        k = positive[0] if positive else 0
        assert items[start + k] % 10 == candidates[row] % 10
