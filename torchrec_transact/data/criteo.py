#!/usr/bin/env python3
"""Criteo click logs (Kaggle or the 24 Terabyte day files) with synthetic action sequences.

Raw layout, one example per line: ``label<TAB>I1..I13<TAB>C1..C26``, 40 fields, an empty
field is missing, C* are 8-hex-digit hashes. Exported samples often strip a line's
trailing empty fields: a line of 14 to 39 fields reads its missing categorical fields as
missing values, and is counted (``CriteoArrays.short_lines``). Features as in DLRM: dense ``log(1 + x)``,
missing as 0 (negative counts, which occur in I2, are clipped to 0 first); categorical
hashes modulo a configurable table size, missing as 0. torchrec's preprocessed numpy layout
(``day_N_{dense,sparse,labels}.npy`` from ``BinaryCriteoUtils.tsv_to_npys``) is read too;
its dense values are already transformed by torchrec.

Criteo has no action sequences, so every row gets a synthetic one (deterministic per seed
and batch of rows): the candidate is the row's value of ``candidate_column`` (hashed like the other
categorical features), the sequence items live in the same id space, and with probability
``sequence_signal`` a clicked row's most recent positive action is on an item of the
candidate's category (``id % num_categories``), so a sequence model has something to find.
"""

import math
import re
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from iopath.common.file_io import PathManager
from torch.utils.data import IterableDataset

from torchrec_transact.data.batch import TransActBatch
from torchrec_transact.data.kjt import categorical_kjt, sequence_kjt

INT_FEATURES = 13
CAT_FEATURES = 26
NUM_FIELDS = 1 + INT_FEATURES + CAT_FEATURES
DENSE_NAMES = [f"int_{i}" for i in range(INT_FEATURES)]
SPARSE_NAMES = [f"cat_{i}" for i in range(CAT_FEATURES)]


@dataclass
class CriteoArrays:
    """Parsed rows.

    Args:
        dense (np.ndarray): float32 [N, 13], already transformed.
        sparse (np.ndarray): int64 [N, 26], hashed into the table sizes.
        labels (np.ndarray): float32 [N].
        skipped_lines (int): malformed lines skipped (``skip_bad_lines=True``).
    """

    dense: np.ndarray
    sparse: np.ndarray
    labels: np.ndarray
    skipped_lines: int = 0
    short_lines: int = 0
    blank_lines: int = 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def report(self) -> Dict[str, int]:
        """What the reader skipped or repaired, by kind (nothing is dropped uncounted)."""
        return {
            "rows": len(self), "skipped_malformed_lines": self.skipped_lines,
            "short_lines_read_as_missing": self.short_lines, "blank_lines": self.blank_lines,
        }


_HEX = re.compile(r"[0-9a-fA-F]{1,16}")  # at most 64 bits


def _parse_line(fields: List[str]) -> Tuple[int, List[int], List[int]]:
    if not 1 + INT_FEATURES <= len(fields) <= NUM_FIELDS:
        raise ValueError(f"expected {NUM_FIELDS} tab-separated fields, got {len(fields)}")
    fields = fields + [""] * (NUM_FIELDS - len(fields))  # stripped trailing fields: missing
    if fields[0] not in ("0", "1"):
        raise ValueError(f"label {fields[0]!r} is not 0 or 1")
    dense = []
    for i, field in enumerate(fields[1 : 1 + INT_FEATURES]):
        try:
            dense.append(int(field) if field else 0)
        except ValueError:
            raise ValueError(f"dense feature I{i + 1} = {field!r} is not an integer") from None
    sparse = []
    for i, field in enumerate(fields[1 + INT_FEATURES :]):
        if field and not _HEX.fullmatch(field):
            raise ValueError(f"categorical feature C{i + 1} = {field[:40]!r} is not a hex hash of at most 64 bits")
        sparse.append(int(field, 16) if field else 0)
    return int(fields[0]), dense, sparse


def read_criteo_tsv(
    paths: Sequence[str],
    table_size: int = 100_000,
    skip_bad_lines: bool = False,
    max_rows: Optional[int] = None,
) -> CriteoArrays:
    """Reads raw Criteo TSV files (one Kaggle ``train.txt`` or the day files in order).

    A malformed line (more than 40 or fewer than 14 fields, non-integer dense value,
    non-hex or wider than 64-bit category, label other than 0/1) raises ``ValueError``
    naming the file and line; with ``skip_bad_lines`` it is skipped and counted instead
    (with a warning when it is more than a tenth of the lines). Garbage never becomes
    numbers. A file that is not text, or that leaves no row, is a ``ValueError`` naming it.

    Args:
        paths (Sequence[str]): files (any path iopath opens).
        table_size (int): categorical hashes are taken modulo this.
        skip_bad_lines (bool): skip and count malformed lines.
        max_rows (Optional[int]): stop after this many rows.

    Returns:
        CriteoArrays: the rows.
    """
    path_manager = PathManager()
    labels: List[int] = []
    dense: List[List[int]] = []
    sparse: List[List[int]] = []
    skipped = short = blank = 0
    for path in paths:
        with path_manager.open(path, "r", encoding="utf-8", newline="\n") as f:
            line_number = 0
            try:
                for line_number, line in enumerate(f, start=1):
                    if max_rows is not None and len(labels) >= max_rows:
                        break
                    fields = line.rstrip("\r\n").split("\t")
                    if fields == [""]:
                        blank += 1
                        continue
                    try:
                        label, row_dense, row_sparse = _parse_line(fields)
                    except ValueError as error:
                        if skip_bad_lines:
                            skipped += 1
                            continue
                        raise ValueError(f"{path}:{line_number}: {error}") from None
                    short += len(fields) < NUM_FIELDS
                    labels.append(label)
                    dense.append(row_dense)
                    sparse.append(row_sparse)
            except UnicodeDecodeError as error:
                raise ValueError(
                    f"{path}:{line_number + 1}: not a UTF-8 text file (byte {error.object[error.start]:#04x})"
                ) from None
    where = ", ".join(paths)
    if not labels:
        what = f"all {skipped} lines were malformed and skipped" if skipped else "no rows"
        raise ValueError(f"{where}: {what}")
    if skipped > 0.1 * (skipped + len(labels)):
        warnings.warn(f"{where}: skipped {skipped} malformed lines of {skipped + len(labels)}")
    dense_array = np.asarray(dense, dtype=np.float64).reshape(-1, INT_FEATURES)
    return CriteoArrays(
        dense=np.log1p(np.maximum(dense_array, 0.0)).astype(np.float32),
        sparse=(np.asarray(sparse, dtype=np.int64).reshape(-1, CAT_FEATURES) % table_size),
        labels=np.asarray(labels, dtype=np.float32),
        skipped_lines=skipped,
        short_lines=short,
        blank_lines=blank,
    )


def read_criteo_npy(
    dense_paths: Sequence[str],
    sparse_paths: Sequence[str],
    labels_paths: Sequence[str],
    table_size: int = 100_000,
) -> CriteoArrays:
    """Reads torchrec's preprocessed numpy layout (``BinaryCriteoUtils.tsv_to_npys``).

    Args:
        dense_paths, sparse_paths, labels_paths (Sequence[str]): per day, in order.
        table_size (int): categorical ids are taken modulo this.

    Returns:
        CriteoArrays: the rows (dense as torchrec transformed them).
    """
    path_manager = PathManager()

    def load(paths: Sequence[str]) -> np.ndarray:
        arrays = []
        for path in paths:
            with path_manager.open(path, "rb") as f:
                arrays.append(np.load(f))
        return np.concatenate(arrays)

    dense, sparse, labels = load(dense_paths), load(sparse_paths), load(labels_paths)
    if dense.shape[1:] != (INT_FEATURES,) or sparse.shape[1:] != (CAT_FEATURES,):
        raise ValueError(
            f"npy shapes dense {dense.shape}, sparse {sparse.shape}: expected [N, "
            f"{INT_FEATURES}] and [N, {CAT_FEATURES}]"
        )
    return CriteoArrays(
        dense=dense.astype(np.float32),
        sparse=sparse.astype(np.int64) % table_size,
        labels=labels.reshape(-1).astype(np.float32),
    )


def synthetic_sequences(
    rows: np.ndarray,
    candidates: np.ndarray,
    clicked: np.ndarray,
    num_items: int,
    num_categories: int,
    max_seq_len: int,
    signal: float,
    seed: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sequences for a batch of Criteo rows, deterministic per (seed, rows).

    Args:
        rows (np.ndarray): int64 [B] global row indices.
        candidates (np.ndarray): int64 [B] candidate ids (in [0, num_items)).
        clicked (np.ndarray): bool [B].
        num_items, num_categories (int): the id space and its categories (id % C).
        max_seq_len (int): longest sequence.
        signal (float): probability that a clicked row's latest positive action is on
            the candidate's category.
        seed (int): stream seed.

    Returns:
        Tuple[np.ndarray, ...]: padded [B, max_seq_len] action types, item ids and ages
        (most recent first), and lengths [B].
    """
    B, L = rows.shape[0], max_seq_len
    first = int(rows[0]) if B else 0
    rng = np.random.default_rng([seed, first, B])
    lengths = np.minimum(L, np.floor(rng.exponential(30.0, B)).astype(np.int64) + 1)
    actions = rng.choice(3, size=(B, L), p=[0.6, 0.25, 0.15])
    items = rng.integers(0, num_items, (B, L))
    ages = (np.cumsum(rng.exponential(1800.0, (B, L)), axis=1) + 1.0).astype(np.float32)
    planted = clicked & (rng.random(B) < signal)
    positive = actions != 2
    slot = np.where(positive.any(1), positive.argmax(1), 0)  # latest positive action
    rows_planted = np.flatnonzero(planted)
    per_category = max(1, num_items // num_categories)
    same_category = (
        rng.integers(0, per_category, B) * num_categories + candidates % num_categories
    ) % num_items
    actions[rows_planted, slot[rows_planted]] = np.minimum(actions[rows_planted, slot[rows_planted]], 1)
    items[rows_planted, slot[rows_planted]] = same_category[rows_planted]
    return actions, items, ages, lengths


class CriteoWithSequences(IterableDataset):
    """Criteo rows as :class:`TransActBatch` batches with synthetic sequences.

    Each row is a request of its own (one candidate); one task, ``click``. Rank ``r`` of
    ``world_size`` reads batches ``r, r + world_size, ...``.

    Args:
        arrays (CriteoArrays): from :func:`read_criteo_tsv` or :func:`read_criteo_npy`.
        batch_size (int): rows per batch.
        candidate_column (int): which categorical column is the candidate item (0-based).
        table_size (int): the id space of the candidate column (and of sequence items).
        num_categories (int): item categories for the sequence signal.
        max_seq_len (int): longest sequence.
        sequence_signal (float): see the module docstring.
        seed (int): sequence stream seed.
        rank (int): this process's rank.
        world_size (int): number of ranks.

    Example::

        import os
        data_dir = os.environ["TRANSACT_DATA_DIR"]
        arrays = read_criteo_tsv([f"{data_dir}/criteo_tiny/train.tsv"], table_size=1000)
        batch = next(iter(CriteoWithSequences(arrays, batch_size=64, table_size=1000)))
        batch.sparse_features.keys()[:2]  # ['cat_0', 'cat_1']
    """

    def __init__(
        self,
        arrays: CriteoArrays,
        batch_size: int,
        candidate_column: int = 2,
        table_size: int = 100_000,
        num_categories: int = 100,
        max_seq_len: int = 100,
        sequence_signal: float = 0.5,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        if not 0 <= candidate_column < CAT_FEATURES:
            raise ValueError(f"candidate_column={candidate_column}, expected 0..{CAT_FEATURES - 1}")
        self.arrays = arrays
        self.batch_size = batch_size
        self.candidate_column = candidate_column
        self.table_size = table_size
        self.num_categories = num_categories
        self.max_seq_len = max_seq_len
        self.sequence_signal = sequence_signal
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        batches = math.ceil(len(self.arrays) / self.batch_size)
        return len(range(self.rank, batches, self.world_size))

    def batch(self, rows: np.ndarray) -> TransActBatch:
        """The examples of the given global row indices."""
        a = self.arrays
        B = rows.shape[0]
        candidates = a.sparse[rows, self.candidate_column]
        actions, items, ages, lengths = synthetic_sequences(
            rows, candidates, a.labels[rows] > 0, self.table_size, self.num_categories,
            self.max_seq_len, self.sequence_signal, self.seed,
        )
        valid = np.arange(self.max_seq_len)[None, :] < lengths[:, None]
        sequence = sequence_kjt(
            torch.from_numpy(actions[valid]),
            torch.from_numpy(items[valid]),
            torch.from_numpy(ages[valid]),
            torch.from_numpy(lengths),
            torch.from_numpy(candidates),
        )
        sparse = categorical_kjt(SPARSE_NAMES, torch.from_numpy(a.sparse[rows]))
        return TransActBatch(
            dense_features=torch.from_numpy(a.dense[rows]),
            sparse_features=sparse,
            sequence_features=sequence,
            labels=torch.from_numpy(a.labels[rows]).unsqueeze(1),
            weights=torch.ones(B),
            request_ids=torch.from_numpy(rows.astype(np.int64)),
        )

    def __iter__(self) -> Iterator[TransActBatch]:
        n = len(self.arrays)
        for start in range(self.rank * self.batch_size, n, self.world_size * self.batch_size):
            yield self.batch(np.arange(start, min(start + self.batch_size, n)))
