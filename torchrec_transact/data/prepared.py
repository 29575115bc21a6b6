#!/usr/bin/env python3
"""Training from a prepared folder (:mod:`torchrec_transact.data.prepare`): each rank reads
its own shards (``shards[rank::world]``) and each data-loader worker its own share of them,
one shard in memory at a time; raw ids become table rows through the folder's
vocabularies (ids outside them share row 0).

    transact-train --data prepared --data-path shards/ --data-workers 2
"""

import itertools
import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from torchrec_transact.data.action_logs import LogRequests, span_positions
from torchrec_transact.data.batch import CANDIDATE_ITEM_FEATURE, TransActBatch
from torchrec_transact.data.prepare import FIXED, META_JSON, PREPARED_VERSION, VOCABULARY_JSON


def read_meta(folder: str) -> Tuple[Dict[str, Any], Dict[str, List[str]]]:
    """A prepared folder's ``meta.json`` and ``vocabulary.json``.

    Raises:
        ValueError: not a finished prepared folder, or another version.
    """
    try:
        with open(os.path.join(folder, META_JSON)) as f:
            meta = json.load(f)
        with open(os.path.join(folder, VOCABULARY_JSON)) as f:
            vocabularies = json.load(f)
    except FileNotFoundError as error:
        raise ValueError(f"{folder}: not a prepared folder ({os.path.basename(error.filename)} missing; "
                         "run python -m torchrec_transact.data.prepare)") from None
    if meta.get("version") != PREPARED_VERSION:
        raise ValueError(f"{folder}: prepared with version {meta.get('version')}, this package reads {PREPARED_VERSION}")
    return meta, vocabularies


def check_settings(meta: Dict[str, Any], wanted: Dict[str, Any], folder: str) -> None:
    """The request settings of a run must be those the folder was prepared with (and
    ``max_seq_len`` at most the prepared one)."""
    prepared = meta["settings"]
    for name in FIXED:
        if name in wanted and wanted[name] != prepared[name]:
            raise ValueError(
                f"--{name.replace('_', '-')} {wanted[name]}: {folder} was prepared with {prepared[name]}; "
                f"pass --{name.replace('_', '-')} {prepared[name]} or prepare again"
            )
    if wanted.get("max_seq_len", 0) > prepared["max_seq_len"]:
        raise ValueError(f"--max-seq-len {wanted['max_seq_len']}: {folder} holds sequences of at most "
                         f"{prepared['max_seq_len']} actions")


def _rows(values: pa.Array, vocabulary: pa.Array) -> np.ndarray:
    """Table rows of raw ids: position in the vocabulary + 1, row 0 when absent."""
    found = pc.index_in(values, value_set=vocabulary)
    return pc.fill_null(found, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1


def _flat(column: pa.ChunkedArray) -> pa.Array:
    return column.combine_chunks().flatten()


class PreparedRequests(LogRequests):
    """The requests of one shard, with the split of the folder's time cuts.

    Args:
        table (pa.Table): the shard.
        meta (Dict[str, Any]): the folder's meta.
        vocabularies (Dict[str, pa.Array]): raw ids by feature (row = position + 1).
        max_seq_len (int): most recent actions kept (at most the prepared length).
    """

    def __init__(self, table: pa.Table, meta: Dict[str, Any], vocabularies: Dict[str, pa.Array], max_seq_len: int) -> None:
        self.meta = meta
        self.time_cut, self.valid_cut = meta["time_cut"], meta["valid_cut"]
        self.request_id = table.column("request_id").to_numpy()
        self.request_time = table.column("request_time").to_numpy()
        self.request_user = _rows(table.column("user").combine_chunks(), vocabularies["user_id"])
        self.request_size = pc.list_value_length(table.column("candidate_item").combine_chunks()).to_numpy(
            zero_copy_only=False).astype(np.int64)
        self._candidate_start = np.concatenate([[0], np.cumsum(self.request_size)])
        self._items = _rows(_flat(table.column("candidate_item")), vocabularies[CANDIDATE_ITEM_FEATURE])
        self._labels = np.stack(
            [_flat(table.column(f"label:{t}")).to_numpy(zero_copy_only=False) for t in meta["tasks"]], 1
        ).reshape(-1, len(meta["tasks"]))
        self._categoricals = [_rows(_flat(table.column(f"candidate:{c}")), vocabularies[c]) for c in meta["categorical"]]
        sequences = table.column("sequence_item").combine_chunks()
        lengths = pc.list_value_length(sequences).to_numpy(zero_copy_only=False).astype(np.int64)
        self._sequence_start = np.concatenate([[0], np.cumsum(lengths)])
        self._sequence_length = np.minimum(lengths, max_seq_len)  # most recent first: keep the head
        self._sequence_action = _flat(table.column("sequence_action")).to_numpy().astype(np.int64)
        self._sequence_item = _rows(sequences.flatten(), vocabularies[CANDIDATE_ITEM_FEATURE])
        self._sequence_age = _flat(table.column("sequence_age")).to_numpy()

    @property
    def tasks(self) -> List[str]:
        return list(self.meta["tasks"])

    @property
    def categorical_features(self) -> List[str]:
        return list(self.meta["categorical"])

    def sequences(self, requests: Sequence[int]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for r in requests:
            lo = self._sequence_start[r]
            hi = lo + self._sequence_length[r]
            out.append((self._sequence_action[lo:hi], self._sequence_item[lo:hi], self._sequence_age[lo:hi]))
        return out

    def candidates(self, requests: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        spans = span_positions(self._candidate_start, requests)
        return self._items[spans], self._labels[spans], [c[spans] for c in self._categoricals]

    def request_ids(self, requests: Sequence[int]) -> np.ndarray:
        # Unique across the folder's shards, not only within this one.
        return self.request_id[np.asarray(requests, dtype=np.int64)]


class PreparedFolder:
    """A prepared folder opened for training: its meta, vocabularies and shards.

    Args:
        folder (str): the prepared folder.
        max_seq_len (int): most recent actions kept per sequence.
        settings (Optional[Dict[str, Any]]): the run's request settings, checked against
            the prepared ones (:func:`check_settings`).
    """

    def __init__(self, folder: str, max_seq_len: int = 100, settings: Optional[Dict[str, Any]] = None) -> None:
        self.folder = folder
        self.meta, raw = read_meta(folder)
        check_settings(self.meta, {**(settings or {}), "max_seq_len": max_seq_len}, folder)
        self.max_seq_len = max_seq_len
        self.raw_ids = raw
        self.vocabularies = {feature: pa.array(ids, pa.large_string()) for feature, ids in raw.items()}
        self.shards = [os.path.join(folder, name) for name in self.meta["shards"]]

    def rank_shards(self, rank: int, world: int, split: str = "train") -> List[str]:
        """Rank ``rank``'s share of the shards holding requests of ``split``.

        Raises:
            ValueError: fewer such shards than ranks.
        """
        holding = [s for s, counts in zip(self.shards, self.meta["shard_requests"]) if counts[split]]
        if len(holding) < world:
            raise ValueError(f"{self.folder}: {len(holding)} shards hold {split} requests, for {world} ranks; "
                             "prepare more shards (--shards)")
        return holding[rank::world]

    def requests(self, shard: str) -> PreparedRequests:
        return PreparedRequests(pq.read_table(shard), self.meta, self.vocabularies, self.max_seq_len)

    def batches(self, split: str, shards: Sequence[str], batch_size: int, shuffle: bool = False,
                seed: int = 0) -> Iterator[TransActBatch]:
        """Batches of whole requests of ``split`` from ``shards``, one shard loaded at a
        time (shuffled: the shard order and the requests within each shard)."""
        order = list(shards)
        if shuffle:
            order = [order[k] for k in np.random.default_rng(seed).permutation(len(order))]
        for k, shard in enumerate(order):
            yield from self.requests(shard).batches(split, batch_size, shuffle=shuffle, seed=seed * 1_000_003 + k)


class _ShardStream(torch.utils.data.IterableDataset):
    """A rank's training batches, epoch after epoch; data-loader worker ``w`` of ``n``
    reads the rank's shards ``w::n``. An epoch without a batch is an error, never an
    endless loop."""

    def __init__(self, folder: PreparedFolder, shards: Sequence[str], batch_size: int, seed: int) -> None:
        self.folder, self.shards, self.batch_size, self.seed = folder, list(shards), batch_size, seed

    def __iter__(self) -> Iterator[TransActBatch]:
        info = torch.utils.data.get_worker_info()
        mine = self.shards if info is None else self.shards[info.id :: info.num_workers]
        for epoch in itertools.count():
            empty = True
            for batch in self.folder.batches("train", mine, self.batch_size, shuffle=True, seed=self.seed + epoch):
                empty = False
                yield batch
            if empty:
                raise ValueError(f"prepared: {self.folder.folder}: shards {[os.path.basename(s) for s in mine]} "
                                 "hold no training request")


def training_batches(folder: PreparedFolder, rank: int, world: int, batch_size: int, seed: int,
                     workers: int = 0) -> Iterator[TransActBatch]:
    """Rank ``rank``'s training batches, endless (epoch ``n`` shuffled with ``seed + n``),
    read by ``workers`` data-loader processes (0: this process), started once."""
    shards = folder.rank_shards(rank, world)
    stream = _ShardStream(folder, shards, batch_size, seed)
    if workers <= 0:
        return iter(stream)
    if workers > len(shards):
        raise ValueError(f"--data-workers {workers}: rank {rank} has {len(shards)} shards with training requests; "
                         "each worker needs one")
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, multiprocessing_context="spawn")
    return iter(loader)
