#!/usr/bin/env python3
"""Data sources by name: what each gives the model (its shapes) and the training loop (its
batches).

    open_data("synthetic", DataOptions(batch_size=500))   # -> DataSpec
    register_data_source("my_log", open_my_log, needs_path=True, description="...")

A source is a function ``DataOptions -> DataSpec``. Its shapes (``ModelSpec``: tasks,
dense width, categorical tables, item and action vocabularies) are saved with every
checkpoint, so a model is rebuilt for serving without opening the data again.
"""

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, TYPE_CHECKING

import numpy as np
import torch

from torchrec_transact.data.batch import CANDIDATE_ITEM_FEATURE, TransActBatch

if TYPE_CHECKING:
    from torchrec_transact.data.event_format import EventFormat

# Criteo: categorical ids hashed into tables of this size; the last rows (in time order)
# evaluate.
CRITEO_TABLE_SIZE = 100_000
CRITEO_EVAL_FRACTION = 0.1
# Event logs: a session longer than this is split into requests of at most this many
# candidates (MovieLens users rate hundreds of films in one sitting).
LOG_MAX_REQUEST_SIZE = 10
# Synthetic data is endless: evaluate this many batches per rank unless told otherwise.
SYNTHETIC_EVAL_BATCHES = 20


@dataclass
class ModelSpec:
    """The shapes a data source fixes in the model (saved with every checkpoint as
    ``model.json``, so serving rebuilds the model without opening the data).

    Args:
        tasks (List[str]): label columns, in order.
        dense_in_features (int): dense width, before the user vector.
        user_embedding_dim (int): width of the precomputed user vector (last dense columns).
        sparse_tables (List[Tuple[str, int]]): (feature, rows) of each categorical table.
        num_items (int): item vocabulary (sequence and candidate).
        num_action_types (int): action-type vocabulary.
    """

    tasks: List[str]
    dense_in_features: int
    user_embedding_dim: int
    sparse_tables: List[Tuple[str, int]]
    num_items: int
    num_action_types: int


@dataclass
class DataSpec(ModelSpec):
    """What a data source gives the model and the loop.

    Args:
        train (Callable[[int, int, int], Iterator[TransActBatch]]): ``(rank, world_size,
            start)`` -> an endless iterator of this rank's training batches from batch
            ``start`` of its shard (the data position of a resumed run).
        evaluation (Callable[[int, int], List[TransActBatch]]): ``(rank, world_size)`` ->
            this rank's evaluation batches.
        item_vectors (Optional[Callable[[int], torch.Tensor]]): ``dim`` -> pretrained
            item vectors [num_items, dim], when the source has them.
        category_vectors (Optional[Callable[[int], torch.Tensor]]): ``dim`` -> content
            vectors [num_items, dim] made from each item's category (a random centroid
            per category plus noise), when the source has a category column (Taobao):
            a stand-in for pretrained vectors that covers items the model never trains.
        batch_multiple (int): batch sizes must be a multiple of this (whole requests).
        report (Dict[str, int]): what the reader counted: rows read, rows skipped or
            repaired by kind (logged with every run).
        validation (Optional[Callable[[int, int], List[TransActBatch]]]): this rank's
            batches of the validation split (the end of the training period), if any.
        vocabularies (Dict[str, List[str]]): per categorical feature whose ids come from
            raw ids, the raw id of each table row from row 1 (row 0: out of vocabulary);
            saved with checkpoints so a model is served by raw ids.
        action_names (List[str]): the action types, in id order.
    """

    train: Callable[[int, int, int], Iterator[TransActBatch]]
    evaluation: Callable[[int, int], List[TransActBatch]]
    item_vectors: Optional[Callable[[int], torch.Tensor]] = None
    category_vectors: Optional[Callable[[int], torch.Tensor]] = None
    batch_multiple: int = 1
    report: Dict[str, int] = dataclasses.field(default_factory=dict)
    validation: Optional[Callable[[int, int], List[TransActBatch]]] = None
    vocabularies: Dict[str, List[str]] = dataclasses.field(default_factory=dict)
    action_names: List[str] = dataclasses.field(default_factory=list)

    def model_spec(self) -> ModelSpec:
        return ModelSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelSpec)})


@dataclass
class DataOptions:
    """What a run asks of its data source.

    Args:
        path (Optional[str]): the file(s); comma-separated for several.
        batch_size (int): examples per batch.
        eval_batches (Optional[int]): evaluation batches (None: the whole evaluation
            split; synthetic data: 20 per rank).
        max_seq_len (int): longest action sequence.
        seed (int): data stream seed.
        skip_bad_rows (bool): skip malformed rows (counted in ``DataSpec.report``) instead
            of failing on the first one.
        event_format (Optional[str]): the JSON format of ``--data events``.
        session_gap_s (float): event logs: a longer gap starts a new request.
        max_request_size (Optional[int]): event logs: at most this many candidates.
        train_fraction, valid_fraction (float): logs: the time split (the rest evaluates).
        min_id_count (int): logs: ids seen fewer times in training share the unknown row.
        data_workers (int): prepared folders: data-loader processes per rank (0: none).
        lifelong_len (int): lifelong actions per request (0: none): synthetic data, session
            logs.
        impression_len (int): impressions per request (0: none): synthetic data, logs.
    """

    path: Optional[str] = None
    batch_size: int = 500
    eval_batches: Optional[int] = None
    max_seq_len: int = 100
    seed: int = 0
    skip_bad_rows: bool = False
    event_format: Optional[str] = None
    session_gap_s: float = 3600.0
    max_request_size: Optional[int] = LOG_MAX_REQUEST_SIZE
    train_fraction: float = 0.7
    valid_fraction: float = 0.1
    min_id_count: int = 1
    data_workers: int = 0
    lifelong_len: int = 0
    impression_len: int = 0


DataSource = Callable[[DataOptions], DataSpec]


@dataclass(frozen=True)
class _Entry:
    open: DataSource
    needs_path: bool
    description: str


_SOURCES: Dict[str, _Entry] = {}


def register_data_source(name: str, open_fn: DataSource, needs_path: bool = True, description: str = "") -> None:
    """Makes ``--data NAME`` available to training, the ablation runner and benchmarks.

    Args:
        name (str): the source's name.
        open_fn (DataSource): ``DataOptions -> DataSpec``.
        needs_path (bool): the source reads ``DataOptions.path``.
        description (str): one line for ``--help``.
    """
    _SOURCES[name] = _Entry(open_fn, needs_path, description)


def data_sources() -> List[str]:
    """Registered source names, in registration order."""
    return list(_SOURCES)


def needs_path(name: str) -> bool:
    """Whether the registered source ``name`` reads ``DataOptions.path``."""
    return _SOURCES[name].needs_path


def describe_data_sources() -> str:
    """One ``name: description`` per source, for help texts."""
    return "; ".join(f"{name}: {entry.description}" for name, entry in _SOURCES.items())


def open_data(name: str, options: DataOptions) -> DataSpec:
    """Opens a registered source (no process group needed).

    Raises:
        ValueError: an unknown source, a missing path, or a batch size the source cannot
            split into whole requests.
    """
    if name not in _SOURCES:
        raise ValueError(f"--data {name!r}: expected one of {data_sources()}")
    entry = _SOURCES[name]
    if entry.needs_path and not options.path:
        raise ValueError(f"--data {name} needs --data-path")
    spec = entry.open(options)
    if options.batch_size % spec.batch_multiple:
        raise ValueError(
            f"--batch-size {options.batch_size}: {name} requests have {spec.batch_multiple} "
            f"candidates; use a multiple of {spec.batch_multiple}"
        )
    return spec


def _cycle(make_epoch: Callable[[int], Iterable[TransActBatch]], source: str) -> Iterator[TransActBatch]:
    """Epoch after epoch; an epoch without a batch (a rank's share smaller than one batch)
    is an error, never an endless loop."""
    for epoch in itertools.count():
        empty = True
        for batch in make_epoch(epoch):
            empty = False
            yield batch
        if empty:
            raise ValueError(f"{source}: an epoch of this rank's training data holds no batch")


def _from(start: int, batches: Iterator[TransActBatch]) -> Iterator[TransActBatch]:
    return itertools.islice(batches, start, None)


def _open_synthetic(options: DataOptions) -> DataSpec:
    from torchrec_transact.data.synthetic import (
        category_item_embeddings,
        SPARSE_FEATURES,
        SyntheticActionData,
        SyntheticConfig,
        TASKS,
    )

    sc = SyntheticConfig(
        max_seq_len=options.max_seq_len, lifelong_len=options.lifelong_len, impression_len=options.impression_len
    )

    def stream(rank: int, world: int, **kwargs: object) -> SyntheticActionData:
        return SyntheticActionData(sc, options.batch_size, options.seed, rank=rank, world_size=world, **kwargs)

    return DataSpec(
        tasks=list(TASKS),
        dense_in_features=sc.dense_in_features,
        user_embedding_dim=sc.user_embedding_dim,
        sparse_tables=list(zip(SPARSE_FEATURES, [sc.num_users, sc.num_items, sc.num_categories])),
        num_items=sc.num_items,
        num_action_types=sc.num_action_types,
        train=lambda rank, world, start: _from(start, iter(stream(rank, world))),
        evaluation=lambda rank, world: list(
            stream(rank, world, num_batches=(options.eval_batches or SYNTHETIC_EVAL_BATCHES) * world, split="eval")
        ),
        # The paper starts from pretrained (PinSage) item vectors; these are the
        # synthetic catalogue's category-clustered stand-in.
        item_vectors=lambda dim: category_item_embeddings(
            sc.num_items, sc.num_categories, dim, generator=torch.Generator().manual_seed(options.seed)
        ),
        batch_multiple=sc.candidates_per_request,
    )


def _open_criteo(options: DataOptions) -> DataSpec:
    from torchrec_transact.data.criteo import (
        CriteoArrays,
        CriteoWithSequences,
        INT_FEATURES,
        read_criteo_tsv,
        SPARSE_NAMES,
    )
    from torchrec_transact.data.tasks import PINTEREST_ACTIONS

    assert options.path is not None
    arrays = read_criteo_tsv(options.path.split(","), CRITEO_TABLE_SIZE, skip_bad_lines=options.skip_bad_rows)
    cut = int(len(arrays) * (1.0 - CRITEO_EVAL_FRACTION))  # rows are in time order
    if cut < options.batch_size:  # only full batches train
        raise ValueError(
            f"criteo: {options.path}: {cut} training rows (of {len(arrays)}), fewer than one "
            f"batch of {options.batch_size}; lower --batch-size"
        )
    if cut == len(arrays):
        raise ValueError(f"criteo: {options.path}: {len(arrays)} rows leave no evaluation row")

    def rows(lo: int, hi: int, rank: int, world: int, seed: int) -> CriteoWithSequences:
        part = CriteoArrays(arrays.dense[lo:hi], arrays.sparse[lo:hi], arrays.labels[lo:hi])
        return CriteoWithSequences(
            part, options.batch_size, table_size=CRITEO_TABLE_SIZE, max_seq_len=options.max_seq_len,
            seed=seed, rank=rank, world_size=world,
        )

    def epoch(rank: int, world: int, number: int) -> Iterator[TransActBatch]:
        # Full batches only: every rank runs the same number of equal steps.
        batches = rows(0, cut, rank, world, options.seed + number)
        return (b for b in batches if b.batch_size == options.batch_size)

    return DataSpec(
        tasks=["click"],
        dense_in_features=INT_FEATURES,
        user_embedding_dim=0,
        sparse_tables=[(name, CRITEO_TABLE_SIZE) for name in SPARSE_NAMES],
        num_items=CRITEO_TABLE_SIZE,
        num_action_types=len(PINTEREST_ACTIONS),
        train=lambda rank, world, start: _from(start, _cycle(lambda n: epoch(rank, world, n), f"criteo: {options.path}")),
        evaluation=lambda rank, world: list(
            itertools.islice(rows(cut, len(arrays), rank, world, options.seed), options.eval_batches)
        ),
        report=arrays.report(),
    )


def _log_format(name: str, options: DataOptions) -> "EventFormat":
    from torchrec_transact.data.event_format import load_event_format
    from torchrec_transact.data.event_log import preset_for_file

    if name == "events":
        if not options.event_format:
            raise ValueError("--data events needs --event-format FORMAT.json (see torchrec_transact.data.event_format)")
        return load_event_format(options.event_format)
    return preset_for_file(name, str(options.path))


def _log_spec(
    tasks: List[str],
    vocabularies: Dict[str, List[str]],
    action_names: List[str],
    train: Callable[[int, int, int], Iterator[TransActBatch]],
    evaluation: Callable[[str], Callable[[int, int], List[TransActBatch]]],
    validation: bool,
    report: Dict[str, int],
) -> DataSpec:
    """The spec of a log's requests: the log dense features, one table per raw-id
    vocabulary (``vocabularies``: each row's raw id from row 1; row 0 is unknown ids),
    ``evaluation(split)`` batches of the evaluation and (``validation``) validation
    splits."""
    from torchrec_transact.data.action_logs import DENSE_FEATURES

    return DataSpec(
        tasks=list(tasks),
        dense_in_features=len(DENSE_FEATURES),
        user_embedding_dim=0,
        sparse_tables=[(feature, len(ids) + 1) for feature, ids in vocabularies.items()],
        num_items=len(vocabularies[CANDIDATE_ITEM_FEATURE]) + 1,
        num_action_types=len(action_names),
        train=train,
        evaluation=evaluation("eval"),
        validation=evaluation("valid") if validation else None,
        report=report,
        vocabularies=vocabularies,
        action_names=list(action_names),
    )


def _log_source(name: str) -> DataSource:
    def open_log_source(options: DataOptions) -> DataSpec:
        from torchrec_transact.data.action_logs import open_log

        assert options.path is not None
        fmt = _log_format(name, options)
        log, requests = open_log(
            fmt, options.path, skip_bad_rows=options.skip_bad_rows, session_gap_s=options.session_gap_s,
            max_request_size=options.max_request_size, max_seq_len=options.max_seq_len, min_id_count=options.min_id_count,
            train_fraction=options.train_fraction, valid_fraction=options.valid_fraction,
            lifelong_len=options.lifelong_len, impression_len=options.impression_len,
        )
        for split in ("train", "eval") + (("valid",) if options.valid_fraction else ()):
            if requests.split(split).size == 0:
                raise ValueError(
                    f"{name}: {options.path}: no {split} requests: the time cuts put all "
                    f"{requests.request_time.size} requests of {len(log)} rows elsewhere (do the "
                    "rows span a single time?)"
                )
        vocabularies = {
            feature: log.vocabularies[key]  # type: ignore[attr-defined]
            for feature, key in [("user_id", "user_id"), (CANDIDATE_ITEM_FEATURE, "item")]
            + [(c, c) for c in requests.categorical_features]
        }

        def batches(split: str, rank: int, world: int, **kwargs: object) -> Iterator[TransActBatch]:
            return requests.batches(split, options.batch_size, rank=rank, world_size=world, **kwargs)

        def evaluation(split: str) -> Callable[[int, int], List[TransActBatch]]:
            return lambda rank, world: list(itertools.islice(batches(split, rank, world), options.eval_batches))

        spec = _log_spec(
            requests.tasks,
            {feature: vocab.raw_ids for feature, vocab in vocabularies.items()},
            fmt.action_names,
            lambda rank, world, start: _from(
                start,
                _cycle(
                    lambda n: batches("train", rank, world, shuffle=True, seed=options.seed + n),
                    f"{name}: {options.path}",
                ),
            ),
            evaluation,
            bool(options.valid_fraction),
            {**log.report, "requests": int(requests.request_time.size)},  # type: ignore[attr-defined]
        )
        if requests.categorical_features:  # e.g. Taobao's item category
            category = requests.categorical_features[0]
            spec.category_vectors = lambda dim: _category_vectors(
                log.items, log.categoricals[category], spec.num_items,  # type: ignore[attr-defined]
                len(vocabularies[category].raw_ids) + 1, dim, options.seed)
        return spec

    return open_log_source


def _category_vectors(
    items: np.ndarray, categories: np.ndarray, num_items: int, num_categories: int, dim: int, seed: int
) -> torch.Tensor:
    """[num_items, dim] vectors clustered by each item's category (an item seen with
    several keeps its last row's); items never seen share category 0."""
    from torchrec_transact.data.synthetic import clustered_vectors

    of_item = np.zeros(num_items, dtype=np.int64)
    of_item[items] = categories
    generator = torch.Generator().manual_seed(seed)
    return clustered_vectors(torch.from_numpy(of_item), num_categories, dim, generator=generator)


def _open_prepared(options: DataOptions) -> DataSpec:
    from torchrec_transact.data.prepare import FIXED
    from torchrec_transact.data.prepared import PreparedFolder, training_batches

    assert options.path is not None
    folder = PreparedFolder(options.path, options.max_seq_len, {name: getattr(options, name) for name in FIXED})
    meta = folder.meta
    for split, count in meta["requests"].items():
        if count == 0 and (split != "valid" or options.valid_fraction):
            raise ValueError(f"prepared: {options.path}: no {split} requests")

    def evaluation(split: str) -> Callable[[int, int], List[TransActBatch]]:
        return lambda rank, world: list(itertools.islice(
            folder.batches(split, folder.rank_shards(rank, world, split), options.batch_size), options.eval_batches))

    features = ["user_id", CANDIDATE_ITEM_FEATURE] + list(meta["categorical"])
    return _log_spec(
        meta["tasks"],
        {f: folder.raw_ids[f] for f in features},
        meta["action_names"],
        lambda rank, world, start: _from(
            start, training_batches(folder, rank, world, options.batch_size, options.seed, options.data_workers)
        ),
        evaluation,
        bool(options.valid_fraction),
        {**meta["report"], "requests": sum(meta["requests"].values())},
    )


register_data_source(
    "synthetic", _open_synthetic, needs_path=False,
    description="the package's generated users, sessions and requests of 10 candidates",
)
register_data_source("criteo", _open_criteo, description="Criteo TSV day files with synthetic sequences")
register_data_source("events", _log_source("events"), description="your own log, read by --event-format FORMAT.json")
register_data_source(
    "movielens", _log_source("movielens"),
    description="MovieLens ratings, any official layout (100K u.data, .inter, 1M/10M ::, CSV releases)",
)
register_data_source("taobao", _log_source("taobao"), description="Taobao UserBehavior CSV")
register_data_source("kuairand", _log_source("kuairand"), description="KuaiRand log (official columns or the like/hate sample)")
register_data_source("mind", _log_source("mind"), description="MIND behaviors.tsv (one request per impression row)")
register_data_source(
    "prepared", _open_prepared,
    description="a folder of Parquet request shards (python -m torchrec_transact.data.prepare)",
)
