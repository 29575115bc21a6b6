#!/usr/bin/env python3
"""Raw ids -> embedding-table rows, with a shared out-of-vocabulary row."""

from typing import List, Sequence, Tuple

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
    def build(cls, values: np.ndarray) -> Tuple["Vocabulary", np.ndarray]:
        """The vocabulary of ``values`` and their rows."""
        encoded = pc.dictionary_encode(pa.array(values, type=pa.string())) if len(values) else None
        if encoded is None:
            return cls([]), np.zeros(0, dtype=np.int64)
        return cls(encoded.dictionary.to_pylist()), encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64) + 1

    def lookup(self, raw: Sequence[object]) -> np.ndarray:
        """Rows of raw ids (any type, compared as strings); unknown ids get row 0."""
        return np.array([self._rows.get(str(r), self.OOV) for r in raw], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.raw_ids) + 1
