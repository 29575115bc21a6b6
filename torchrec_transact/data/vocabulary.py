#!/usr/bin/env python3
"""Raw ids -> embedding-table rows, with a shared out-of-vocabulary row."""

from typing import List, Sequence, Tuple, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class Vocabulary:
    """Raw ids (as strings) -> table rows, in order of first appearance from row 1; row 0
    is the out-of-vocabulary row.

    Example::

        vocab, rows = Vocabulary.build(np.array(["b", "a", "b"]))
        rows, vocab.lookup(["a", "zz"]), len(vocab)  # [1 2 1], [2 0], 3
    """

    OOV = 0

    def __init__(self, raw_ids: Sequence[str]) -> None:
        self.raw_ids: List[str] = list(raw_ids)
        self._rows = {raw: row for row, raw in enumerate(self.raw_ids, start=1)}

    @classmethod
    def build(cls, values: Union[np.ndarray, pa.Array]) -> Tuple["Vocabulary", np.ndarray]:
        """The vocabulary of ``values`` (strings, numpy or arrow) and their rows."""
        if not len(values):
            return cls([]), np.zeros(0, dtype=np.int64)
        encoded = pc.dictionary_encode(values if isinstance(values, pa.Array) else pa.array(values, type=pa.string()))
        return cls(encoded.dictionary.to_pylist()), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) + 1

    def lookup(self, raw: Sequence[object]) -> np.ndarray:
        """Rows of raw ids (any type, compared as text with surrounding spaces trimmed, as
        the reader trims them); unknown ids get row 0."""
        return np.array([self._rows.get(str(r).strip(), self.OOV) for r in raw], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.raw_ids) + 1

    def keep_frequent(self, rows: np.ndarray, min_count: int) -> Tuple["Vocabulary", np.ndarray]:
        """The vocabulary of the ids seen at least ``min_count`` times in ``rows`` (the
        training rows), and ``remap`` [len(self)]: old row -> new row, 0 for the rest (rare
        ids share the out-of-vocabulary row, which so gets trained).

        Example::

            vocab, _ = Vocabulary.build(np.array(["a", "b", "c"]))
            kept, remap = vocab.keep_frequent(np.array([1, 1, 3]), min_count=2)
            kept.raw_ids, remap  # ['a'], [0 1 0 0]
        """
        counts = np.bincount(rows, minlength=len(self))
        keep = counts >= min_count
        keep[self.OOV] = False
        remap = np.zeros(len(self), dtype=np.int64)
        remap[keep] = np.arange(1, int(keep.sum()) + 1)
        return Vocabulary([raw for raw, kept in zip(self.raw_ids, keep[1:]) if kept]), remap
