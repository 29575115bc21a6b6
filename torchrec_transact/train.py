#!/usr/bin/env python3
"""Train a TransAct ranking model: ``python -m torchrec_transact.train`` / ``transact-train``.

One code path for one process and for many (torchrun, torchx): the model is wrapped in
``DistributedModelParallel`` (every table sharded onto FBGEMM's kernels with a fused
optimizer: RowWiseAdagrad on CPU, Adam on CUDA; dense parameters take Adam), gloo on CPU
and NCCL on CUDA, each rank reading its own shard of the data. torchrec's
``TrainPipelineSparseDist`` drives the steps (``--pipeline plain`` for a plain loop).
Evaluation reports AUC and NE per task (``torchrec.metrics``) and HIT@3 per task.

    python -m torchrec_transact.train                              # synthetic, TransAct-DCN
    python -m torchrec_transact.train --encoder avg_pool --model dlrm --steps 500
    python -m torchrec_transact.train --data movielens --data-path ml-100k.inter
    python -m torchrec_transact.train --config run.json --output-dir runs/a
"""

import argparse
import dataclasses
import itertools
import json
import os
import socket
import sys
import time
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_transact.data.batch import TransActBatch
from torchrec_transact.metrics import auc_ne_module, HitAtK, model_outputs
from torchrec_transact.models import TransActDCN, TransActDLRM, TransActTrain
from torchrec_transact.modules.baselines import build_sequence_encoder, SEQUENCE_ENCODERS
from torchrec_transact.modules.sequence import EARLY_FUSION_MODES, TransActConfig
from torchrec_transact.sharding import load_unsharded_state_dict, shard_model

DATA_SOURCES = ("synthetic", "criteo", "movielens", "taobao")
MODELS = ("dcn", "dlrm")
EMBEDDING_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
}
CPU_EMBEDDING_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")
MODEL_JSON = "model.json"  # in every checkpoint: config, model spec, encoder, tasks


@dataclass
class TrainConfig:
    """Every knob of a run; flags and a JSON ``--config`` file set them."""

    data: str = "synthetic"
    data_path: Optional[str] = None
    model: str = "dcn"
    encoder: str = "transact"
    tasks: Optional[List[str]] = None
    batch_size: int = 500
    steps: int = 400
    eval_interval: int = 200
    eval_batches: int = 20
    dense_lr: float = 1e-3
    embedding_lr: float = 0.05
    embedding_optimizer: Optional[str] = None  # None: rowwise_adagrad on CPU, adam on CUDA
    embedding_dim: int = 16
    max_seq_len: int = 100
    latest_k: int = 10
    time_window_s: float = 86400.0
    action_embedding_dim: int = 32  # 0: no action embedding (an ablation)
    early_fusion: str = "concat"  # concat | append | none
    max_pool: bool = True
    dcn_low_rank_dim: Optional[int] = None  # None: full-rank DCN-V2 cross layers
    pipeline: str = "auto"  # auto | sparse_dist | plain
    output_dir: str = "outputs/run"
    checkpoint_interval: int = 0  # 0: only at the end
    resume: bool = False
    init_from: Optional[str] = None
    seed: int = 0
    log_interval: int = 20
    compare_no_sequence: bool = False
    pretrained_items: bool = True  # synthetic data: start the item table from its vectors
    device: str = "auto"  # auto | cpu | cuda


def config_from_args(argv: Optional[List[str]] = None) -> TrainConfig:
    """Flags override a ``--config`` JSON file, which overrides the defaults."""
    parser = argparse.ArgumentParser(
        prog="transact-train", description="Train a TransAct ranking model."
    )
    parser.add_argument("--config", help="JSON file of TrainConfig fields")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif f.name == "tasks":
            parser.add_argument(flag, nargs="+", default=None)
        else:  # int, float or str, as annotated (Optional[X]: X)
            kind = next((a for a in typing.get_args(f.type) if a is not type(None)), f.type)
            parser.add_argument(flag, type=kind, default=None)
    args = parser.parse_args(argv)
    values: Dict[str, Any] = {}
    if args.config:
        with open(args.config) as f:
            values.update(json.load(f))
        unknown = set(values) - {f.name for f in dataclasses.fields(TrainConfig)}
        if unknown:
            parser.error(f"--config {args.config}: unknown fields {sorted(unknown)}")
    values.update({k: v for k, v in vars(args).items() if k != "config" and v is not None})
    return TrainConfig(**values)


def validate(config: TrainConfig, data_tasks: Optional[List[str]] = None) -> None:
    """Raises ``ValueError`` with one line for a config that cannot run."""
    if config.data not in DATA_SOURCES:
        raise ValueError(f"--data {config.data!r}: expected one of {list(DATA_SOURCES)}")
    if config.data != "synthetic" and not config.data_path:
        raise ValueError(f"--data {config.data} needs --data-path")
    if config.model not in MODELS:
        raise ValueError(f"--model {config.model!r}: expected one of {list(MODELS)}")
    if config.encoder not in SEQUENCE_ENCODERS:
        raise ValueError(f"--encoder {config.encoder!r}: expected one of {sorted(SEQUENCE_ENCODERS)}")
    for name in ("batch_size", "steps", "eval_batches", "embedding_dim", "max_seq_len"):
        if getattr(config, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)}: must be > 0")
    if config.eval_interval < 0 or config.checkpoint_interval < 0:
        raise ValueError("--eval-interval and --checkpoint-interval must be >= 0")
    if config.early_fusion not in EARLY_FUSION_MODES:
        raise ValueError(f"--early-fusion {config.early_fusion!r}: expected one of {list(EARLY_FUSION_MODES)}")
    if config.action_embedding_dim < 0 or config.latest_k < 0 or (config.latest_k == 0 and not config.max_pool):
        raise ValueError(
            f"--action-embedding-dim {config.action_embedding_dim} and --latest-k {config.latest_k} must be "
            ">= 0, and the sequence output needs --latest-k > 0 or --max-pool"
        )
    if config.pipeline not in ("auto", "sparse_dist", "plain"):
        raise ValueError(f"--pipeline {config.pipeline!r}: expected auto, sparse_dist or plain")
    if config.embedding_optimizer is not None and config.embedding_optimizer not in EMBEDDING_OPTIMIZERS:
        raise ValueError(
            f"--embedding-optimizer {config.embedding_optimizer!r}: expected one of "
            f"{sorted(EMBEDDING_OPTIMIZERS)}"
        )
    if config.resume and config.init_from:
        raise ValueError("--resume and --init-from exclude each other")
    if config.data == "synthetic" and config.batch_size % 10:
        raise ValueError(f"--batch-size {config.batch_size}: synthetic requests have 10 candidates; use a multiple of 10")
    if config.tasks is not None and data_tasks is not None:
        missing = [t for t in config.tasks if t not in data_tasks]
        if missing:
            raise ValueError(f"--tasks {missing} are not in the {config.data} data (tasks: {data_tasks})")


@dataclass
class ModelSpec:
    """The shapes a data source fixes in the model (saved with every checkpoint as
    ``model.json``, so serving rebuilds the model without opening the data)."""

    tasks: List[str]
    dense_in_features: int
    user_embedding_dim: int
    sparse_tables: List[Tuple[str, int]]
    num_items: int
    num_action_types: int


@dataclass
class DataSpec(ModelSpec):
    """What a data source gives the model and the loop.

    ``train(rank, world_size, start)`` is an endless iterator of this rank's training
    batches from batch ``start`` of its shard (the data position of a resumed run);
    ``evaluation(rank, world_size)`` this rank's evaluation batches.
    """

    train: Callable[[int, int, int], Iterator[TransActBatch]]
    evaluation: Callable[[int, int], List[TransActBatch]]
    item_vectors: Optional[Callable[[int], torch.Tensor]] = None  # (dim) -> [num_items, dim]

    def model_spec(self) -> ModelSpec:
        return ModelSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(ModelSpec)})


def _cycle(make_epoch: Callable[[int], Iterable[TransActBatch]]) -> Iterator[TransActBatch]:
    for epoch in itertools.count():
        yield from make_epoch(epoch)


def data_spec(config: TrainConfig) -> DataSpec:
    """Opens the configured data source (no process group needed)."""
    if config.data == "synthetic":
        from torchrec_transact.data.synthetic import (
            category_item_embeddings,
            SPARSE_FEATURES,
            SyntheticActionData,
            SyntheticConfig,
            TASKS,
        )

        sc = SyntheticConfig(max_seq_len=config.max_seq_len)
        return DataSpec(
            tasks=list(TASKS),
            dense_in_features=sc.dense_in_features,
            user_embedding_dim=sc.user_embedding_dim,
            sparse_tables=list(zip(SPARSE_FEATURES, [sc.num_users, sc.num_items, sc.num_categories])),
            num_items=sc.num_items,
            num_action_types=sc.num_action_types,
            train=lambda rank, world, start: itertools.islice(
                iter(SyntheticActionData(sc, config.batch_size, config.seed, rank=rank, world_size=world)),
                start,
                None,
            ),
            evaluation=lambda rank, world: list(
                SyntheticActionData(
                    sc, config.batch_size, config.seed, num_batches=config.eval_batches * world,
                    rank=rank, world_size=world, split="eval",
                )
            ),
            # The paper starts from pretrained (PinSage) item vectors; these are the
            # synthetic catalogue's category-clustered stand-in.
            item_vectors=lambda dim: category_item_embeddings(
                sc.num_items, sc.num_categories, dim, generator=torch.Generator().manual_seed(config.seed)
            ),
        )
    if config.data == "criteo":
        from torchrec_transact.data.criteo import (
            CriteoArrays,
            CriteoWithSequences,
            read_criteo_tsv,
            SPARSE_NAMES,
        )

        table_size = 100_000
        arrays = read_criteo_tsv(config.data_path.split(","), table_size=table_size)
        cut = int(len(arrays) * 0.9)  # rows are in time order: the last 10% evaluate

        def part(lo: int, hi: int) -> CriteoArrays:
            return CriteoArrays(arrays.dense[lo:hi], arrays.sparse[lo:hi], arrays.labels[lo:hi])

        def rows(subset: CriteoArrays, rank: int, world: int, seed: int) -> CriteoWithSequences:
            return CriteoWithSequences(
                subset, config.batch_size, table_size=table_size, max_seq_len=config.max_seq_len,
                seed=seed, rank=rank, world_size=world,
            )

        def full_batches(data: CriteoWithSequences) -> Iterator[TransActBatch]:
            return (b for b in data if b.batch_size == config.batch_size)

        return DataSpec(
            tasks=["click"],
            dense_in_features=13,
            user_embedding_dim=0,
            sparse_tables=[(name, table_size) for name in SPARSE_NAMES],
            num_items=table_size,
            num_action_types=3,
            train=lambda rank, world, start: itertools.islice(
                _cycle(lambda epoch: full_batches(rows(part(0, cut), rank, world, config.seed + epoch))),
                start,
                None,
            ),
            evaluation=lambda rank, world: list(
                itertools.islice(rows(part(cut, len(arrays)), rank, world, config.seed), config.eval_batches)
            ),
        )
    from torchrec_transact.data.action_logs import load_preset

    log, requests = load_preset(
        config.data, config.data_path, max_seq_len=config.max_seq_len, max_request_size=10
    )
    sparse = [("user_id", log.num_users), ("candidate_item", log.num_items)]
    sparse += list(log.categorical_sizes.items())
    return DataSpec(
        tasks=requests.tasks,
        dense_in_features=4,
        user_embedding_dim=0,
        sparse_tables=sparse,
        num_items=log.num_items,
        num_action_types=len(log.format.action_names),
        train=lambda rank, world, start: itertools.islice(
            _cycle(
                lambda epoch: requests.batches(
                    "train", config.batch_size, shuffle=True, seed=config.seed + epoch,
                    rank=rank, world_size=world,
                )
            ),
            start,
            None,
        ),
        evaluation=lambda rank, world: list(
            itertools.islice(
                requests.batches("eval", config.batch_size, rank=rank, world_size=world),
                config.eval_batches,
            )
        ),
    )


def build_model(config: TrainConfig, spec: ModelSpec, encoder: str, tasks: List[str]) -> TransActTrain:
    """The unsharded model (shard it with :func:`torchrec_transact.sharding.shard_model`)."""
    sequence_config = TransActConfig(
        num_action_types=spec.num_action_types,
        num_items=spec.num_items,
        max_seq_len=config.max_seq_len,
        latest_k=config.latest_k,
        time_window_s=config.time_window_s,
        action_embedding_dim=config.action_embedding_dim,
        early_fusion=config.early_fusion,
        max_pool=config.max_pool,
    )
    sequence = build_sequence_encoder(encoder, sequence_config)
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(
                name=f"t_{name}", embedding_dim=config.embedding_dim, num_embeddings=size,
                feature_names=[name],
            )
            for name, size in spec.sparse_tables
        ]
    )
    if config.model == "dcn":
        model: nn.Module = TransActDCN(
            ebc, sequence, spec.dense_in_features, [64], [256, 128], dcn_num_layers=3,
            dcn_low_rank_dim=config.dcn_low_rank_dim, user_embedding_dim=spec.user_embedding_dim, tasks=tasks,
        )
    else:
        model = TransActDLRM(
            ebc, sequence, spec.dense_in_features + spec.user_embedding_dim,
            [64, config.embedding_dim], [256, 128], tasks=tasks,
        )
    return TransActTrain(model)


def init_distributed(config: TrainConfig) -> Tuple[int, int, torch.device]:
    """Joins (or, run alone, creates) the process group: NCCL on CUDA, gloo on CPU."""
    use_cuda = config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available())
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        if "TORCHELASTIC_RESTART_COUNT" in os.environ:  # torchrun (torchx): its store
            # Keys under this attempt's prefix: after a restart, the ranks must not read
            # the addresses the dead attempt left in torchrun's store.
            store = dist.TCPStore(
                os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                use_libuv=True,
            )
            attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
            dist.init_process_group(
                backend,
                store=dist.PrefixStore(f"/transact/attempt_{attempt}", store),
                rank=int(os.environ["RANK"]),
                world_size=int(os.environ["WORLD_SIZE"]),
            )
        elif "RANK" in os.environ:  # another launcher that sets the env:// variables
            dist.init_process_group(backend)
        else:  # a single process: a group of one, without touching the environment
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            dist.init_process_group(
                backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
            )
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), device


def _select_tasks(batches: Iterator[TransActBatch], columns: Optional[List[int]]) -> Iterator[TransActBatch]:
    for batch in batches:
        yield batch if columns is None else dataclasses.replace(batch, labels=batch.labels[:, columns])


class _Log:
    """JSON lines in ``output_dir/metrics.jsonl`` (rank 0) and optional TensorBoard."""

    def __init__(self, output_dir: str, rank: int, name: str) -> None:
        self.rank, self.name = rank, name
        self.file = None
        self.tensorboard = None
        if rank == 0:
            os.makedirs(output_dir, exist_ok=True)
            self.file = open(os.path.join(output_dir, "metrics.jsonl"), "a")
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(os.path.join(output_dir, "tensorboard", name))
            except ImportError:  # tensorboard is optional
                self.tensorboard = None

    def write(self, step: int, kind: str, values: Dict[str, Any]) -> None:
        if self.file is None:
            return
        self.file.write(json.dumps({"model": self.name, "step": step, "kind": kind, **values}) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def evaluate(dmp: nn.Module, batches: List[TransActBatch], tasks: List[str], device: torch.device,
             world: int, rank: int) -> Dict[str, float]:
    """AUC, NE and HIT@3 per task over this rank's batches, reduced across ranks."""
    # Every rank must run the same number of forwards (they exchange embeddings).
    count = torch.tensor([len(batches)])
    dist.all_reduce(count, op=dist.ReduceOp.MIN)
    batches = batches[: int(count)]
    batch_size = max((b.batch_size for b in batches), default=1)
    metric_module = auc_ne_module(tasks, batch_size, world, rank)
    hit = HitAtK(tasks, k=3)
    losses = []
    dmp.eval()
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            loss, (_, logits, labels) = dmp(batch)
            losses.append(float(loss))
            metric_module.update(model_outputs(tasks, logits, labels, batch.weights))
            hit.update(torch.sigmoid(logits.float()), labels, batch.request_ids)
    dmp.train()
    raw = metric_module.compute()  # collective; torchrec returns the values on rank 0
    result: Dict[str, float] = {}
    for task in tasks:  # the window spans the whole evaluation
        for name, key in (("auc", f"auc-{task}|window_auc"), ("ne", f"ne-{task}|lifetime_ne")):
            if key in raw:
                result[f"{name}-{task}"] = float(raw[key])
    result.update(hit.compute())
    total = torch.tensor([sum(losses), len(losses)], dtype=torch.float64)
    dist.all_reduce(total)
    result["loss"] = float(total[0] / max(total[1], 1.0))
    shared = [result]
    dist.broadcast_object_list(shared, src=0)  # every rank returns rank 0's full result
    return shared[0]


def _fused_params(config: TrainConfig, device: torch.device) -> Dict[str, Any]:
    name = config.embedding_optimizer or ("adam" if device.type == "cuda" else "rowwise_adagrad")
    if device.type == "cpu" and name not in CPU_EMBEDDING_OPTIMIZERS:
        raise ValueError(
            f"--embedding-optimizer {name}: FBGEMM's CPU kernels support {list(CPU_EMBEDDING_OPTIMIZERS)}"
        )
    return {"optimizer": EMBEDDING_OPTIMIZERS[name], "learning_rate": config.embedding_lr}


def run(
    config: TrainConfig,
    spec: DataSpec,
    encoder: str,
    rank: int,
    world: int,
    device: torch.device,
    output_dir: str,
) -> Dict[str, float]:
    """Trains one model and returns its final evaluation metrics."""
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from tqdm import tqdm

    from torchrec_transact.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    tasks = config.tasks or spec.tasks
    columns = None if config.tasks is None else [spec.tasks.index(t) for t in tasks]
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    dmp = shard_model(build_model(config, spec, encoder, tasks), device, _fused_params(config, device))
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: torch.optim.Adam(params, lr=config.dense_lr),
    )
    optimizer = CombinedOptimizer([dmp.fused_optimizer, dense])
    checkpoints = os.path.join(output_dir, "checkpoints")
    log = _Log(output_dir, rank, encoder)
    torch.manual_seed(config.seed * 1000 + rank)  # dropout and time windows differ by rank
    start = 0
    resume_from = latest_checkpoint(checkpoints) if config.resume else None
    if resume_from is not None:
        dense.init_state()  # Adam's state exists only after a step; load overwrites it
        state = {"model": dmp.state_dict(), "optimizer": optimizer.state_dict()}
        saved = load_checkpoint(resume_from, state)
        dmp.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(saved["rng"])
        start = int(saved["step"])
    elif config.init_from:
        # Warm start on fresh data: weights only; optimizer, data position and RNG anew.
        state = {"model": dmp.state_dict()}
        load_checkpoint(config.init_from, state)
        dmp.load_state_dict(state["model"])
    item_table = "model.sequence_encoder.item_embedding_collection.embeddings.transact_items.weight"
    if (
        resume_from is None
        and not config.init_from
        and config.pretrained_items
        and spec.item_vectors is not None
    ):
        table = dmp.state_dict().get(item_table)  # None: the encoder has no item table
        if table is not None:
            vectors = spec.item_vectors(table.size(1))
            load_unsharded_state_dict(dmp, {item_table: vectors}, strict=False)
    use_pipeline = config.pipeline != "plain"
    if rank == 0:
        print(
            f"[{encoder}] {config.model} on {config.data}: {world} rank(s), {device.type}, "
            f"{'TrainPipelineSparseDist' if use_pipeline else 'plain training loop'}, "
            f"steps {start}..{config.steps}" + (f" (resumed from {resume_from})" if resume_from else ""),
            flush=True,
        )
    log.write(start, "start", {"world_size": world, "resumed_from": resume_from,
                               "pipeline": use_pipeline})
    batches = _select_tasks(spec.train(rank, world, start), columns)
    evaluation = list(_select_tasks(iter(spec.evaluation(rank, world)), columns))
    pipeline = TrainPipelineSparseDist(dmp, optimizer, device) if use_pipeline else None

    # What serving needs to rebuild this model from the checkpoint alone.
    model_json = {
        "config": dataclasses.asdict(config), "spec": dataclasses.asdict(spec.model_spec()),
        "encoder": encoder, "tasks": tasks,
    }

    def checkpoint(step: int) -> None:
        save_checkpoint(
            checkpoints, step, {"model": dmp.state_dict(), "optimizer": optimizer.state_dict()},
            {"rng": torch.get_rng_state()}, files={MODEL_JSON: json.dumps(model_json, indent=1)},
        )

    def evaluate_now() -> Dict[str, float]:
        # The pipeline rewrote the sharded modules' forwards to consume its prefetched
        # batches; evaluate on the original forwards, then hand the model back.
        model = pipeline.detach() if pipeline is not None else dmp
        result = evaluate(model, evaluation, tasks, device, world, rank)
        if pipeline is not None:
            pipeline.attach(model)
        return result

    # Failure drills: the last rank dies at this step (once, if a marker file is given).
    crash_at = int(os.environ.get("TRANSACT_CRASH_AT_STEP", "-1"))
    crash_marker = os.environ.get("TRANSACT_CRASH_MARKER")
    progress = tqdm(total=config.steps, initial=start, disable=rank != 0, desc=encoder, mininterval=2.0)
    window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
    for step in range(start + 1, config.steps + 1):
        if step == crash_at and rank == world - 1 and not (crash_marker and os.path.exists(crash_marker)):
            if crash_marker:
                open(crash_marker, "w").close()
            os._exit(17)  # a rank dies without cleanup, as a killed process would
        if pipeline is not None:
            loss = pipeline.progress(batches)[0]
        else:
            loss, _ = dmp(next(batches).to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        window_loss += float(loss.detach())
        window_steps += 1
        progress.update(1)
        if step % config.log_interval == 0 or step == config.steps:
            elapsed = time.perf_counter() - window_start
            rate = window_steps * config.batch_size * world / max(elapsed, 1e-9)
            progress.set_postfix(loss=f"{window_loss / window_steps:.4f}", ex_s=f"{rate:,.0f}")
            log.write(step, "train", {"loss": window_loss / window_steps, "examples_per_s": rate})
            window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
        if config.eval_interval and step % config.eval_interval == 0 and step != config.steps:
            log.write(step, "eval", evaluate_now())
        if config.checkpoint_interval and step % config.checkpoint_interval == 0:
            checkpoint(step)
    progress.close()
    metrics = evaluate_now()
    log.write(config.steps, "eval", metrics)
    if start < config.steps or not resume_from:
        checkpoint(config.steps)
    log.close()
    metrics["state_sha256"] = state_digest(dmp)  # type: ignore[assignment]
    return metrics


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every rank's local model state (its shards and the dense weights), to
    compare two runs bit for bit."""
    import hashlib

    local = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensors = [s.tensor for s in value.local_shards()] if hasattr(value, "local_shards") else [value]
        for tensor in tensors:
            local.update(key.encode())
            values = tensor.detach().cpu()
            if values.dtype == torch.bfloat16:  # numpy has no bfloat16
                values = values.view(torch.int16)
            local.update(values.numpy().tobytes())  # C order, whatever the strides
    digests: List[Optional[str]] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, local.hexdigest())
    return hashlib.sha256("".join(str(d) for d in digests).encode()).hexdigest()


def _table(results: Dict[str, Dict[str, float]], tasks: List[str]) -> str:
    names = list(results)
    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for metric in ("auc", "ne", "hit@3"):
        for task in tasks:
            key = f"{metric}-{task}"
            lines.append(f"| {key} | " + " | ".join(f"{results[n][key]:.4f}" for n in names) + " |")
    lines.append("| eval loss | " + " | ".join(f"{results[n]['loss']:.4f}" for n in names) + " |")
    return "\n".join(lines)


def _quiet_library_noise() -> None:
    """torchrec's planner and DDP print deprecation notes and warnings about dry runs that
    say nothing about this job; keep the console for progress and results."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")
    for name in ("torchrec.distributed.planner", "torchrec.distributed.planner.types",
                 "torchrec.distributed.planner.storage_reservations"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Optional[List[str]] = None) -> Dict[str, Dict[str, float]]:
    _quiet_library_noise()
    try:
        config = config_from_args(argv)
        validate(config)
        spec = data_spec(config)
        validate(config, spec.tasks)
    except (ValueError, OSError) as error:  # one clear line, before any process group
        print(f"transact-train: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    rank, world, device = init_distributed(config)
    try:
        encoders = [config.encoder] + (["none"] if config.compare_no_sequence and config.encoder != "none" else [])
        results: Dict[str, Dict[str, float]] = {}
        for encoder in encoders:
            out = config.output_dir if encoder == config.encoder else os.path.join(config.output_dir, "no_sequence")
            results[encoder] = run(config, spec, encoder, rank, world, device, out)
        if rank == 0:
            tasks = config.tasks or spec.tasks
            print("\nEvaluation (" + ", ".join(f"{e}" for e in results) + f"), {config.steps} steps each:")
            print(_table(results, tasks))
            with open(os.path.join(config.output_dir, "final_metrics.json"), "w") as f:
                json.dump(results, f, indent=2)
        return results
    finally:
        dist.destroy_process_group()


def cli() -> None:
    """Console-script entry point (``transact-train``)."""
    main()


if __name__ == "__main__":
    cli()
