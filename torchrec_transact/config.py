#!/usr/bin/env python3
"""Run configuration: :class:`ModelConfig` (what the model is), :class:`TrainConfig` (a
training run) and the command-line parser built from them.

Every field carries its help text and, where there are some, its choices; the flags of
``transact-train`` (``--help``), the JSON ``--config`` file and the checks all read them,
so a knob is described in one place. Flags override the JSON file, which overrides the
defaults.
"""

import argparse
import dataclasses
import json
import re
import sys
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from torchrec_transact.data.registry import data_sources, describe_data_sources
from torchrec_transact.modules.baselines import SEQUENCE_ENCODERS
from torchrec_transact.modules.config import EARLY_FUSION_MODES, IMPRESSION_ITEM_FEATURE, LIFELONG_SELECTIONS, TransActConfig

MODELS = ("dcn", "dlrm")
PIPELINES = ("auto", "sparse_dist", "plain")
DEVICES = ("auto", "cpu", "cuda")
EMBEDDING_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adam")
CPU_EMBEDDING_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the flag and the value."""


Choices = Union[Sequence[str], Callable[[], Sequence[str]]]


def option(default: Any, help: str, choices: Optional[Choices] = None) -> Any:
    """A config field with its help text and choices (read by the flag parser). Choices
    given as a function are read when checked, so registries can grow after import."""
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def choices_of(f: "dataclasses.Field[Any]") -> Optional[List[str]]:
    """A field's choices, or None."""
    choices = f.metadata.get("choices")
    if choices is None:
        return None
    return list(choices() if callable(choices) else choices)


@dataclass
class ModelConfig:
    """What the ranking model is: saved with every checkpoint (``model.json``)."""

    model: str = option("dcn", "ranking model: DCN-V2 (the paper's) or DLRM", MODELS)
    encoder: str = option("transact", "sequence encoder (none: no sequence)", lambda: sorted(SEQUENCE_ENCODERS))
    embedding_dim: int = option(16, "width of the categorical embeddings")
    item_embedding_dim: int = option(32, "width of the item embedding (sequence items and the candidate)")
    max_seq_len: int = option(100, "most recent actions kept per sequence")
    latest_k: int = option(10, "latest output tokens kept as features")
    max_pool: bool = option(True, "add a max pool over all output tokens")
    time_window_s: float = option(86400.0, "random training time window, upper bound in seconds (0: off)")
    action_embedding_dim: int = option(32, "action-type embedding width (0: no action embedding)")
    early_fusion: str = option("concat", "how the candidate joins the tokens", EARLY_FUSION_MODES)
    dcn_low_rank_dim: Optional[int] = option(None, "rank of the DCN cross layers (unset: full rank)")
    lifelong_select_k: int = option(0, "TransAct V2: lifelong actions selected per example (0: no lifelong sequence)")
    lifelong_selection: str = option(
        "nearest", "TransAct V2: the lifelong actions nearest to the candidate, or the most recent (control)",
        LIFELONG_SELECTIONS,
    )
    lifelong_max_len: int = option(10_000, "TransAct V2: most recent lifelong actions eligible for selection")
    lifelong_items: str = option(
        "", "TransAct V2: frozen pretrained vectors for the lifelong items (and the candidate's, to select), row-wise "
        "int8: 'data' (the data's item vectors; synthetic), 'category' (clustered by each item's category; Taobao) "
        "or a .pt file of a [num_items, item_dim] tensor; empty: the trained item table"
    )
    impressions: bool = option(False, "TransAct V2: add the impression sequence (items shown, not engaged with)")
    next_action_loss: float = option(
        0.0, "TransAct V2: weight of the Next Action Loss (a positive example's candidate predicted from the "
        "realtime sequence alone, against the batch's other positive candidates; 0: off)"
    )

    def __post_init__(self) -> None:
        self._check_types()
        self.check()

    def _check_types(self) -> None:
        """Values of the annotated scalar types (a JSON file can hold anything)."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = next((a for a in typing.get_args(f.type) if a is not type(None)), f.type)
            if value is None or kind not in (int, float, str, bool):
                continue
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, f.name, float(value))
            elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(f"{_flag(f.name)} {value!r}: expected {kind.__name__}")

    def check(self) -> None:
        """Raises :class:`ConfigError` for a value out of its choices or range."""
        for f in dataclasses.fields(self):
            value, choices = getattr(self, f.name), choices_of(f)
            if choices and value is not None and value not in choices:
                raise ConfigError(f"{_flag(f.name)} {value!r}: expected one of {choices}")
        if self.embedding_dim <= 0:
            raise ConfigError(f"--embedding-dim {self.embedding_dim}: must be > 0")
        if self.next_action_loss < 0:
            raise ConfigError(f"--next-action-loss {self.next_action_loss}: must be >= 0")
        if self.next_action_loss > 0 and self.encoder not in ("transact", "vanilla_transformer", "bst", "bst_action"):
            raise ConfigError(
                f"--next-action-loss needs a transformer encoder (transact, vanilla_transformer, bst, bst_action), "
                f"not --encoder {self.encoder}"
            )
        if self.lifelong_items and self.lifelong_select_k == 0:
            raise ConfigError(f"--lifelong-items {self.lifelong_items}: needs a lifelong sequence, --lifelong-select-k > 0")
        if self.dcn_low_rank_dim is not None and self.dcn_low_rank_dim <= 0:
            raise ConfigError(f"--dcn-low-rank-dim {self.dcn_low_rank_dim}: must be > 0")
        try:  # the sequence encoder's own checks, on placeholder vocabularies
            self.sequence_config(num_action_types=1, num_items=1)
        except ValueError as error:  # its "max_seq_len=0" is this config's "--max-seq-len 0"
            message = str(error)
            for name in self.model_fields():
                message = re.sub(rf"\b{name}=", f"{_flag(name)} ", message)
            raise ConfigError(message) from None

    def sequence_config(self, num_action_types: int, num_items: int) -> TransActConfig:
        """The encoder's configuration for the data's vocabularies."""
        return TransActConfig(
            num_action_types=num_action_types,
            num_items=num_items,
            max_seq_len=self.max_seq_len,
            item_embedding_dim=self.item_embedding_dim,
            latest_k=self.latest_k,
            time_window_s=self.time_window_s,
            action_embedding_dim=self.action_embedding_dim,
            early_fusion=self.early_fusion,
            max_pool=self.max_pool,
            lifelong_select_k=self.lifelong_select_k,
            lifelong_selection=self.lifelong_selection,
            lifelong_max_len=self.lifelong_max_len,
            lifelong_frozen_items=bool(self.lifelong_items),
            impression_item_feature=IMPRESSION_ITEM_FEATURE if self.impressions else None,
            next_action=self.next_action_loss > 0,
        )

    def model_fields(self) -> Dict[str, Any]:
        """The :class:`ModelConfig` part of this config (of a :class:`TrainConfig` too)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)}


@dataclass
class TrainConfig(ModelConfig):
    """Every knob of a training run (the model's and the loop's)."""

    data: str = option("synthetic", "data source", data_sources)
    data_path: Optional[str] = option(None, "the data file(s), comma-separated (every source but synthetic)")
    skip_bad_rows: bool = option(False, "skip malformed rows of the data files (counted in the log) instead of failing")
    event_format: Optional[str] = option(None, "--data events: the log's format, a JSON file (see docs/data.md)")
    session_gap_s: float = option(3600.0, "event logs: a longer gap between a user's rows starts a new request")
    max_request_size: Optional[int] = option(10, "event logs: at most this many candidates per request (unset: no cap)")
    train_fraction: float = option(0.7, "logs: requests before this quantile of request times train")
    valid_fraction: float = option(0.1, "logs: the next requests validate (early stopping, setting choices); 0: none")
    min_id_count: int = option(1, "logs: ids (users, items, categories) seen fewer times in training share one row")
    data_workers: int = option(0, "--data prepared: data-loader processes per rank reading the shards (0: none)")
    lifelong_history: int = option(
        0, "lifelong actions per request in the data (TransAct V2): synthetic data's (with dormant interests), or a "
        "session log's events before the request, most recent first (0: none)"
    )
    impression_history: int = option(
        0, "impressions per request in the data (TransAct V2): synthetic data's (ignored categories), or a log's items "
        "shown to the user before the request and not engaged with (MIND: earlier rows' unclicked articles; an event "
        "log: earlier rows without an action), the N most recent (0: none)"
    )
    adaptive_threads: bool = option(
        False, "CPU: set the intra-op threads each step to the cores other processes leave free"
    )
    tasks: Optional[List[str]] = option(None, "train these of the data's tasks (default: all)")
    batch_size: int = option(500, "examples per batch and process")
    steps: int = option(400, "training steps")
    eval_interval: int = option(200, "evaluate every N steps (0: at the end only)")
    eval_batches: Optional[int] = option(None, "evaluation batches per rank (unset: the whole evaluation split; synthetic: 20)")
    early_stopping: int = option(0, "stop after this many validations without a lower validation loss, and "
                                    "evaluate the best weights (0: off)")
    dense_lr: float = option(1e-3, "Adam learning rate of the dense parameters")
    embedding_lr: float = option(0.05, "learning rate of the fused embedding optimizer")
    dense_weight_decay: float = option(0.0, "decoupled weight decay of the dense parameters (AdamW)")
    embedding_weight_decay: float = option(
        0.0, "decoupled weight decay of the embedding tables (CUDA: rowwise_adagrad and adam; CPU: every row, each step)"
    )
    embedding_optimizer: Optional[str] = option(
        None, "fused embedding optimizer (unset: rowwise_adagrad on CPU, adam on CUDA)", EMBEDDING_OPTIMIZERS
    )
    label_weight_matrix: Optional[List[List[float]]] = option(
        None, "JSON [T, T] matrix M of the weighted loss: w[n,i] = sum_j M[i,j] y[n,j] + m0[i] (1 - y[n,i]) "
        "(unset: identity, the mean BCE)"
    )
    negative_weight: Optional[List[float]] = option(
        None, "JSON list m0 of the weighted loss, one per task, or one number (unset: 1)"
    )
    pipeline: str = option("auto", "torchrec TrainPipelineSparseDist, or a plain loop", PIPELINES)
    device: str = option("auto", "auto: CUDA when available", DEVICES)
    output_dir: str = option("outputs/run", "metrics.jsonl, checkpoints/, final_metrics.json")
    checkpoint_interval: int = option(0, "checkpoint every N steps (0: at the end only)")
    resume: bool = option(False, "continue from the latest checkpoint in --output-dir")
    init_from: Optional[str] = option(None, "start from this checkpoint's weights (fresh optimizer and data)")
    seed: int = option(0, "seed of the weights, the data and the windows")
    log_interval: int = option(20, "log the training loss every N steps")
    compare_no_sequence: bool = option(False, "also train the model without a sequence and compare")
    pretrained_items: bool = option(True, "start the item table from the data's item vectors (synthetic)")

    def __post_init__(self) -> None:
        if _is_number(self.negative_weight):  # one number for every task
            self.negative_weight = [float(self.negative_weight)]
        super().__post_init__()

    def check(self) -> None:
        super().check()
        for name in ("batch_size", "steps", "eval_batches", "log_interval", "max_request_size", "session_gap_s",
                     "min_id_count"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be > 0")
        for name in ("eval_interval", "checkpoint_interval", "early_stopping", "valid_fraction",
                     "dense_weight_decay", "embedding_weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{_flag(name)} {getattr(self, name)}: must be >= 0")
        if not (0.0 < self.train_fraction and self.train_fraction + self.valid_fraction < 1.0):
            raise ConfigError(
                f"--train-fraction {self.train_fraction}, --valid-fraction {self.valid_fraction}: need 0 < train "
                "and train + valid < 1 (the rest evaluates)"
            )
        if self.impression_history and self.data in ("criteo", "prepared"):
            raise ConfigError(f"--impression-history: --data {self.data} has no impressions (synthetic data and logs "
                              "have)")
        if self.lifelong_history and self.data in ("criteo", "mind", "prepared"):
            raise ConfigError(f"--lifelong-history: --data {self.data} has no lifelong history (synthetic data and "
                              "session logs have)")
        if self.lifelong_select_k > 0 and not self.lifelong_history:
            raise ConfigError("--lifelong-select-k needs lifelong histories in the data: --lifelong-history N")
        if self.impressions and not self.impression_history:
            raise ConfigError("--impressions needs impressions in the data: --impression-history N")
        if self.early_stopping and not self.eval_interval:
            raise ConfigError("--early-stopping needs --eval-interval > 0 (it counts validations)")
        if self.resume and self.init_from:
            raise ConfigError("--resume and --init-from exclude each other")
        if self.label_weight_matrix is not None and not (
            isinstance(self.label_weight_matrix, list)
            and all(isinstance(row, list) and all(map(_is_number, row)) for row in self.label_weight_matrix)
        ):
            raise ConfigError(f"--label-weight-matrix {self.label_weight_matrix!r}: expected a JSON list of rows of numbers")
        if self.negative_weight is not None and not (
            isinstance(self.negative_weight, list) and all(map(_is_number, self.negative_weight))
        ):
            raise ConfigError(f"--negative-weight {self.negative_weight!r}: expected a number or a JSON list of numbers")
        if self.device == "cpu" and self.embedding_optimizer not in (None, *CPU_EMBEDDING_OPTIMIZERS):
            raise ConfigError(
                f"--embedding-optimizer {self.embedding_optimizer}: FBGEMM's CPU kernels support "
                f"{list(CPU_EMBEDDING_OPTIMIZERS)}"
            )

    def check_data(self, data_tasks: Sequence[str]) -> List[str]:
        """The run's tasks, checked against the data's; the loss weights checked against
        their count."""
        tasks = list(self.tasks) if self.tasks else list(data_tasks)
        missing = [t for t in tasks if t not in data_tasks]
        if missing:
            raise ConfigError(f"--tasks {missing} are not in the {self.data} data (tasks: {list(data_tasks)})")
        count = len(tasks)
        matrix = self.label_weight_matrix
        if matrix is not None and (len(matrix) != count or any(len(row) != count for row in matrix)):
            raise ConfigError(f"--label-weight-matrix must be {count} x {count}, one row and column per task {tasks}")
        negative = self.negative_weight
        if negative is not None and len(negative) not in (1, count):
            raise ConfigError(f"--negative-weight has {len(negative)} values, expected 1 or {count} ({tasks})")
        return tasks


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, raised to the caller
        raise ConfigError(message)


def _value_type(f: "dataclasses.Field[Any]") -> Any:
    """The parser of a field's flag: its annotated scalar type, or JSON for lists."""
    kind = next((a for a in typing.get_args(f.type) if a is not type(None)), f.type)
    if typing.get_origin(kind) is list:
        return json.loads
    return kind


def build_parser() -> argparse.ArgumentParser:
    """``transact-train``'s flags, one per :class:`TrainConfig` field, with help, choices
    and defaults from the field."""
    parser = _Parser(
        prog="transact-train",
        description="Train a TransAct ranking model (DistributedModelParallel, fused FBGEMM tables).",
        epilog="Data sources: " + describe_data_sources(),
    )
    parser.add_argument("--config", metavar="FILE", help="JSON file of these fields (flags override it)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    for f in dataclasses.fields(TrainConfig):
        flag, choices = _flag(f.name), choices_of(f)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata["help"] + (f" (default: {default})" if default is not None else "")
        metavar = "{" + ",".join(choices) + "}" if choices else None
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "tasks":
            parser.add_argument(flag, nargs="+", default=None, metavar="TASK", help=help_text)
        else:
            parser.add_argument(flag, type=_value_type(f), default=None, metavar=metavar, help=help_text)
    return parser


def parse_overrides(argv: Sequence[str]) -> Tuple[Dict[str, Any], bool]:
    """The fields that ``argv`` sets (a ``--config`` file first, then the flags), and
    whether ``--debug`` was given; nothing is checked yet.

    Raises:
        ConfigError: bad flags or a bad ``--config`` file, in one line.
    """
    args = build_parser().parse_args(list(argv))
    values: Dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config) as f:
                loaded = json.load(f)
        except (OSError, ValueError) as error:
            raise ConfigError(f"--config {args.config}: {error}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {args.config}: expected a JSON object of fields")
        unknown = set(loaded) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            raise ConfigError(f"--config {args.config}: unknown fields {sorted(unknown)}")
        values.update(loaded)
    values.update({k: v for k, v in vars(args).items() if k not in ("config", "debug") and v is not None})
    return values, args.debug


def make_config(values: Dict[str, Any]) -> TrainConfig:
    """A checked :class:`TrainConfig` from field values (wrong types in one line)."""
    try:
        return TrainConfig(**values)
    except TypeError as error:
        raise ConfigError(str(error)) from None


def parse_args(argv: Optional[List[str]] = None) -> Tuple[TrainConfig, bool]:
    """The run's config (flags over a ``--config`` file over the defaults) and whether
    ``--debug`` was given.

    Raises:
        ConfigError: bad flags, a bad ``--config`` file or a bad value, in one line.
    """
    values, debug = parse_overrides(sys.argv[1:] if argv is None else argv)
    return make_config(values), debug
