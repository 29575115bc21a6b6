#!/usr/bin/env python3
"""The training loop: one code path for one process and for many (torchrun, torchx).

The model is wrapped in ``DistributedModelParallel`` (every table sharded onto FBGEMM's
kernels with a fused optimizer: RowWiseAdagrad on CPU, Adam on CUDA; dense parameters take
Adam), gloo on CPU and NCCL on CUDA, each rank reading its own shard of the data.
torchrec's ``TrainPipelineSparseDist`` drives the steps (``pipeline="plain"`` for a plain
loop). Evaluation reports AUC and NE per task (``torchrec.metrics``) and HIT@3 per task.

    results = train(TrainConfig(steps=200, compare_no_sequence=True))
    results["transact"]["auc-click"], results["none"]["auc-click"]

The command line (``transact-train``) and the ablation runner call :func:`train`.
"""

import dataclasses
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.tbe.config.optimizer_config import WeightDecayMode
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from torchrec_transact.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint, state_digest
from torchrec_transact.config import ConfigError, CPU_EMBEDDING_OPTIMIZERS, TrainConfig
from torchrec_transact.data.batch import TransActBatch
from torchrec_transact.data.registry import DataOptions, DataSpec, open_data
from torchrec_transact.data.tasks import higher_is_better
from torchrec_transact.distributed import init_distributed
from torchrec_transact.loss import NextActionLoss, WeightedMultiTaskLoss
from torchrec_transact.metrics import evaluate
from torchrec_transact.models.factory import (
    build_model,
    MODEL_JSON,
    model_description,
    VOCABULARY_JSON,
    vocabulary_description,
)
from torchrec_transact.models.train_wrapper import TransActTrain
from torchrec_transact.modules.config import TransActConfig
from torchrec_transact.modules.sequence import frozen_item_collection
from torchrec_transact.run_log import RunLog
from torchrec_transact.threads import ThreadBudget
from torchrec_transact.sharding import load_unsharded_state_dict, shard_model

EMBEDDING_OPTIMIZERS = {
    "sgd": EmbOptimType.EXACT_SGD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
}

# Called as hook(step, rank, world_size) before each training step (tests install failure
# drills this way; a user may stop, profile or log).
StepHook = Callable[[int, int, int], None]


def open_run_data(config: TrainConfig) -> DataSpec:
    """The run's data source (no process group needed)."""
    return open_data(
        config.data,
        DataOptions(
            path=config.data_path, batch_size=config.batch_size, eval_batches=config.eval_batches,
            max_seq_len=config.max_seq_len, seed=config.seed, skip_bad_rows=config.skip_bad_rows,
            event_format=config.event_format, session_gap_s=config.session_gap_s,
            max_request_size=config.max_request_size, train_fraction=config.train_fraction,
            valid_fraction=config.valid_fraction, min_id_count=config.min_id_count,
            data_workers=config.data_workers, lifelong_len=config.lifelong_history,
            impression_len=config.impression_history,
        ),
    )


def fused_params(config: TrainConfig, device: torch.device) -> Dict[str, Any]:
    """The fused embedding optimizer of the sharded tables."""
    name = config.embedding_optimizer or ("adam" if device.type == "cuda" else "rowwise_adagrad")
    if device.type == "cpu" and name not in CPU_EMBEDDING_OPTIMIZERS:
        raise ConfigError(
            f"--embedding-optimizer {name}: FBGEMM's CPU kernels support {list(CPU_EMBEDDING_OPTIMIZERS)}"
        )
    params: Dict[str, Any] = {"optimizer": EMBEDDING_OPTIMIZERS[name], "learning_rate": config.embedding_lr}
    if config.embedding_weight_decay and device.type != "cpu":  # CPU: TableDecay
        if name not in ("rowwise_adagrad", "adam"):
            raise ConfigError(f"--embedding-weight-decay: FBGEMM's {name} has no weight decay; use rowwise_adagrad or adam")
        params.update(weight_decay=config.embedding_weight_decay, weight_decay_mode=WeightDecayMode.DECOUPLE)
    return params


class TableDecay:
    """Decoupled weight decay of the fused embedding tables on CPU, where FBGEMM's kernels
    take the weight decay settings and ignore them (fbgemm-gpu-cpu 1.8.0: a row-wise
    Adagrad step with decay 0.5 moves a row exactly as without it). After each step every
    row shrinks by ``1 - lr * decay``, as AdamW shrinks dense weights; FBGEMM's CUDA
    kernels decay only the rows a batch touches.

    Args:
        tables (Iterable[torch.Tensor]): the fused optimizer's parameters (its
            ``params``: tensors or ShardedTensors whose local shards are views of the
            kernels' weights).
        learning_rate, decay (float): the embedding optimizer's.
    """

    def __init__(self, tables: Iterable[Any], learning_rate: float, decay: float) -> None:
        self.factor = 1.0 - learning_rate * decay
        self.tables: List[torch.Tensor] = []  # this rank's rows of each table
        for table in tables:
            self.tables += [s.tensor for s in table.local_shards()] if hasattr(table, "local_shards") else [table]

    @torch.no_grad()
    def __call__(self) -> None:
        for table in self.tables:
            table.mul_(self.factor)


def task_loss(config: TrainConfig, tasks: Sequence[str]) -> WeightedMultiTaskLoss:
    """The paper's weighted multi-task loss with the run's M and m0 (identity and 1 by
    default: the mean binary cross-entropy)."""
    count = len(tasks)
    matrix = config.label_weight_matrix if config.label_weight_matrix is not None else torch.eye(count)
    negative = config.negative_weight if config.negative_weight is not None else [1.0]
    return WeightedMultiTaskLoss(matrix, negative[0] if len(negative) == 1 else negative)


def _lifelong_item_buffers(
    config: TrainConfig, spec: DataSpec, encoder: TransActConfig, keys: Iterable[str]
) -> Dict[str, torch.Tensor]:
    """``--lifelong-items``: the frozen lifelong table's int8 weight under its state-dict
    key (among ``keys``), from the data's item vectors, its item categories or a ``.pt``
    file."""
    item_dim, num_items = encoder.item_embedding_dim, encoder.num_items
    if config.lifelong_items in ("data", "category"):
        make = spec.item_vectors if config.lifelong_items == "data" else spec.category_vectors
        if make is None:
            what = "item vectors" if config.lifelong_items == "data" else "item category column"
            raise ConfigError(f"--lifelong-items {config.lifelong_items}: --data {config.data} has no {what}; "
                              "give a .pt file")
        vectors = make(item_dim)
    else:
        try:
            vectors = torch.load(config.lifelong_items, map_location="cpu", weights_only=True)
        except Exception as error:  # missing, not a tensor file, an unsafe pickle, ...
            raise ConfigError(f"--lifelong-items {config.lifelong_items}: {type(error).__name__}: {error}") from None
    if not isinstance(vectors, torch.Tensor) or tuple(vectors.shape) != (num_items, item_dim):
        shape = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__
        raise ConfigError(f"--lifelong-items {config.lifelong_items}: {shape}, expected a [{num_items}, {item_dim}] "
                          "tensor (the data's item vocabulary)")
    quantised = frozen_item_collection(encoder, vectors.float()).state_dict()
    found = {key: quantised[key.split(".lifelong_items.", 1)[1]] for key in keys if ".lifelong_items." in key}
    if not found:  # the table would silently stay zeros
        raise ConfigError(f"--lifelong-items {config.lifelong_items}: the model has no frozen lifelong table "
                          f"(--encoder {config.encoder})")
    return found


def _select_tasks(batches: Iterator[TransActBatch], columns: Optional[List[int]]) -> Iterator[TransActBatch]:
    for batch in batches:
        yield batch if columns is None else dataclasses.replace(batch, labels=batch.labels[:, columns])


def fit(
    config: TrainConfig,
    spec: DataSpec,
    rank: int,
    world: int,
    device: torch.device,
    output_dir: str,
    step_hooks: Sequence[StepHook] = (),
    verbose: bool = True,
) -> Dict[str, Any]:
    """Trains the configured model and returns its final evaluation metrics (and
    ``state_sha256``, the digest of its weights on every rank). ``verbose``: print the
    start line and the progress bar (rank 0)."""
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from tqdm import tqdm

    tasks = config.check_data(spec.tasks)
    if config.lifelong_items and device.type != "cpu":
        # torchrec's quantised collection is built on the CPU and does not move with .to().
        raise ConfigError(f"--lifelong-items: the frozen int8 lifelong table runs on the CPU for now, not {device.type}")
    columns = None if tasks == spec.tasks else [spec.tasks.index(t) for t in tasks]
    name = config.encoder
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model = TransActTrain(
        build_model(spec, config, tasks), loss=task_loss(config, tasks),
        next_action_loss=NextActionLoss([i for i, t in enumerate(tasks) if higher_is_better(t)])
        if config.next_action_loss > 0 else None,
        next_action_weight=config.next_action_loss,
    )
    item_table = model.model.sequence_encoder.item_table  # None: no sequence, no items
    item_key = next((n for n, p in model.named_parameters() if p is item_table), None)
    dmp = shard_model(model, device, fused_params(config, device))
    dense = KeyedOptimizerWrapper(
        dict(in_backward_optimizer_filter(dmp.named_parameters())),
        lambda params: (
            torch.optim.AdamW(params, lr=config.dense_lr, weight_decay=config.dense_weight_decay)
            if config.dense_weight_decay else torch.optim.Adam(params, lr=config.dense_lr)
        ),
    )
    optimizer = CombinedOptimizer([dmp.fused_optimizer, dense])
    decay_tables = (
        TableDecay(dmp.fused_optimizer.params.values(), config.embedding_lr, config.embedding_weight_decay)
        if config.embedding_weight_decay and device.type == "cpu" else None
    )
    checkpoints = os.path.join(output_dir, "checkpoints")
    log = RunLog(output_dir, rank, name)
    torch.manual_seed(config.seed * 1000 + rank)  # dropout and time windows differ by rank
    start = 0
    resume_from = latest_checkpoint(checkpoints) if config.resume else None
    if config.resume and resume_from is None and rank == 0:
        print(f"--resume: no checkpoint in {checkpoints}; starting from step 0", file=sys.stderr, flush=True)
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
    elif config.pretrained_items and spec.item_vectors is not None and item_key is not None:
        vectors = spec.item_vectors(model.model.sequence_encoder.config.item_embedding_dim)
        load_unsharded_state_dict(dmp, {item_key: vectors}, strict=False)
    if config.lifelong_items and resume_from is None:  # also over an --init-from checkpoint's table
        buffers = _lifelong_item_buffers(config, spec, model.model.sequence_encoder.config, dmp.state_dict())
        load_unsharded_state_dict(dmp, buffers, strict=False)
    use_pipeline = config.pipeline != "plain"
    if rank == 0 and verbose:
        print(
            f"[{name}] {config.model} on {config.data}: {world} rank(s), {device.type}, "
            f"{'TrainPipelineSparseDist' if use_pipeline else 'plain training loop'}, "
            f"steps {start}..{config.steps}" + (f" (resumed from {resume_from})" if resume_from else ""),
            flush=True,
        )
    log.write(start, "start", {"world_size": world, "resumed_from": resume_from, "pipeline": use_pipeline,
                               "data": spec.report})
    batches = _select_tasks(spec.train(rank, world, start), columns)
    evaluation = list(_select_tasks(iter(spec.evaluation(rank, world)), columns))
    validation = list(_select_tasks(iter(spec.validation(rank, world)), columns)) if spec.validation else None
    pipeline = TrainPipelineSparseDist(dmp, optimizer, device) if use_pipeline else None
    # What serving needs to rebuild this model, and read raw ids, from the checkpoint alone.
    files = {MODEL_JSON: model_description(config, spec.model_spec(), tasks, config=dataclasses.asdict(config))}
    if spec.vocabularies:
        files[VOCABULARY_JSON] = vocabulary_description(spec.vocabularies, spec.action_names, config.min_id_count)

    def checkpoint(step: int, directory: str = checkpoints, model_only: bool = False) -> None:
        state = {"model": dmp.state_dict()} if model_only else {"model": dmp.state_dict(), "optimizer": optimizer.state_dict()}
        save_checkpoint(directory, step, state, {"rng": torch.get_rng_state()}, files=files)

    def evaluate_now(batches: List[TransActBatch]) -> Dict[str, Optional[float]]:
        # The pipeline rewrote the sharded modules' forwards to consume its prefetched
        # batches; evaluate on the original forwards, then hand the model back.
        model = pipeline.detach() if pipeline is not None else dmp
        result = evaluate(model, batches, tasks, device, world, rank)
        if pipeline is not None:
            pipeline.attach(model)
        return result

    best_dir = os.path.join(output_dir, "best")
    stopper = _EarlyStopping(config.early_stopping)
    last_validation: Dict[int, Dict[str, Optional[float]]] = {}  # step -> its validation

    def validate(step: int) -> None:
        """Validates, logs, and keeps the best weights when early stopping."""
        assert validation is not None
        result = evaluate_now(validation)
        last_validation.clear()
        last_validation[step] = result
        log.write(step, "valid", result)
        if stopper.better(result["loss"], step) and config.early_stopping:
            checkpoint(step, best_dir, model_only=True)

    threads = ThreadBudget() if config.adaptive_threads and device.type == "cpu" else None
    progress = tqdm(total=config.steps, initial=start, disable=rank != 0 or not verbose, desc=name, mininterval=2.0)
    window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
    window_terms: Dict[str, float] = {}  # other loss terms (the Next Action Loss)
    step = start
    try:
        for step in range(start + 1, config.steps + 1):
            for hook in step_hooks:
                hook(step, rank, world)
            if threads is not None:
                threads.update()
            if pipeline is not None:
                loss = pipeline.progress(batches)[0]
            else:
                loss, _ = dmp(next(batches).to(device))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            if decay_tables is not None:
                decay_tables()
            window_loss += float(loss.detach())
            for term, value in dmp.module.last_terms.items():
                window_terms[term] = window_terms.get(term, 0.0) + float(value)
            window_steps += 1
            progress.update(1)
            if step % config.log_interval == 0 or step == config.steps:
                rate = window_steps * config.batch_size * world / max(time.perf_counter() - window_start, 1e-9)
                progress.set_postfix(loss=f"{window_loss / window_steps:.4f}", ex_s=f"{rate:,.0f}")
                log.write(step, "train", {"loss": window_loss / window_steps, "examples_per_s": rate,
                                          **{k: v / window_steps for k, v in window_terms.items()}})
                window_loss, window_start, window_steps = 0.0, time.perf_counter(), 0
                window_terms = {}
            if config.checkpoint_interval and step % config.checkpoint_interval == 0:
                checkpoint(step)
            if config.eval_interval and step % config.eval_interval == 0 and step != config.steps:
                if validation is None:
                    log.write(step, "eval", evaluate_now(evaluation))
                    continue
                validate(step)
                if stopper.stop:
                    break
        if validation is not None and config.early_stopping and not stopper.stop and stopper.best_step != step:
            validate(step)  # the last steps are a candidate too
    finally:
        progress.close()  # an error message starts on a line of its own
    weights_step = step
    if stopper.best_step is not None and config.early_stopping and stopper.best_step != step:
        state = {"model": dmp.state_dict()}  # the best validated weights are the result
        load_checkpoint(os.path.join(best_dir, f"step_{stopper.best_step:08d}"), state)
        dmp.load_state_dict(state["model"])
        weights_step = stopper.best_step
    metrics: Dict[str, Any] = evaluate_now(evaluation)
    if validation is not None:
        valid = last_validation.get(weights_step) or evaluate_now(validation)
        metrics.update({f"valid-{k}": v for k, v in valid.items()})
    metrics["steps"], metrics["best_step"] = step, stopper.best_step if config.early_stopping else step
    log.write(step, "eval", metrics)
    if start < step or not resume_from:
        checkpoint(step)
    log.close()
    metrics["state_sha256"] = state_digest(dmp)
    return metrics


class _EarlyStopping:
    """Counts validations without a lower loss; ``patience`` 0 never stops."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.best_step, self.misses = patience, float("inf"), None, 0

    def better(self, loss: Optional[float], step: int) -> bool:
        if loss is not None and loss < self.best:
            self.best, self.best_step, self.misses = loss, step, 0
            return True
        self.misses += 1
        return False

    @property
    def stop(self) -> bool:
        return self.patience > 0 and self.misses >= self.patience


def results_table(results: Dict[str, Dict[str, Any]], tasks: Sequence[str]) -> str:
    """Markdown: one column per model, one row per metric and task, and the loss; "n/a"
    for a metric that is undefined on the evaluation data."""
    names = list(results)

    def cell(value: Optional[float]) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names)]
    for metric in ("auc", "ne", "hit@3"):
        for task in tasks:
            key = f"{metric}-{task}"
            lines.append(f"| {key} | " + " | ".join(cell(results[n].get(key)) for n in names) + " |")
    if all("hit@3-requests" in results[n] for n in names):
        lines.append("| hit@3 requests | " + " | ".join(f"{results[n]['hit@3-requests']:.0f}" for n in names) + " |")
    lines.append("| eval loss | " + " | ".join(cell(results[n]["loss"]) for n in names) + " |")
    return "\n".join(lines)


def data_summary(report: Dict[str, int]) -> str:
    """One line of what the data reader counted, e.g. ``data: 1999 rows, 3 skipped
    malformed lines``."""
    parts = [f"{count} {name.replace('_', ' ')}" for name, count in report.items() if count]
    return "data: " + (", ".join(parts) if parts else "nothing counted")


def quiet_library_noise() -> None:
    """torchrec's planner and DDP print deprecation notes and warnings about dry runs that
    say nothing about a training job; keep the console for progress and results."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is_fx_tracing.*")
    for name in ("torchrec.distributed.planner", "torchrec.distributed.planner.types",
                 "torchrec.distributed.planner.storage_reservations"):
        logging.getLogger(name).setLevel(logging.ERROR)


def train(
    config: TrainConfig, step_hooks: Sequence[StepHook] = (), spec: Optional[DataSpec] = None, verbose: bool = True
) -> Dict[str, Dict[str, Any]]:
    """The whole job: joins the process group, trains the configured model (and, with
    ``compare_no_sequence``, the same model without a sequence in ``output_dir/no_sequence``)
    and writes ``final_metrics.json``.

    Args:
        config (TrainConfig): the run.
        step_hooks (Sequence[StepHook]): called before each step as ``hook(step, rank,
            world_size)``.
        spec (Optional[DataSpec]): the opened data (default: open ``config.data``).
        verbose (bool): print the start lines, progress and the comparison table (rank 0).

    Returns:
        Dict[str, Dict[str, Any]]: each model's final metrics, by encoder name.
    """
    spec = spec or open_run_data(config)
    config.check_data(spec.tasks)
    rank, world, device = init_distributed(config.device)
    try:
        runs = [config]
        if config.compare_no_sequence and config.encoder != "none":
            baseline_dir = os.path.join(config.output_dir, "no_sequence")
            runs.append(dataclasses.replace(config, encoder="none", output_dir=baseline_dir, lifelong_select_k=0,
                                            impressions=False, next_action_loss=0.0))
        results = {
            run.encoder: fit(run, spec, rank, world, device, run.output_dir, step_hooks, verbose) for run in runs
        }
        if rank == 0:
            if verbose:
                print("\nEvaluation (" + ", ".join(results) + f"), {config.steps} steps each:")
                print(results_table(results, config.tasks or spec.tasks))
                if spec.report:
                    print(data_summary(spec.report))
            with open(os.path.join(config.output_dir, "final_metrics.json"), "w") as f:
                json.dump(results, f, indent=2)
        return results
    finally:
        dist.destroy_process_group()
