#!/usr/bin/env python3
"""Evaluation metrics: AUC and NE per task through ``torchrec.metrics``, and HIT@K.

HIT@K is the TransAct paper's offline metric: within each request, rank its candidates by
a utility score and count how many of the top K carry a task's label; report the mean
over requests. Higher is better for positive tasks (save, click), lower for negative ones
(hide). Batches never split a request, so each batch is ranked on its own; the sums are
reduced across ranks in :meth:`HitAtK.compute`.
"""

import warnings
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torchrec.metrics.auc import AUCMetric
from torchrec.metrics.metric_module import RecMetricModule
from torchrec.metrics.metrics_config import RecComputeMode, RecTaskInfo
from torchrec.metrics.ne import NEMetric
from torchrec.metrics.rec_metric import RecMetricList

from torchrec_transact.data.batch import TransActBatch
from torchrec_transact.data.tasks import NEGATIVE_TASKS
from torchrec_transact.modules.masks import rank_within_segments


class HitAtK:
    """HIT@K per task over requests.

    Args:
        tasks (Sequence[str]): task names, in the column order of predictions and labels.
        k (int): how many top candidates of a request count.
        utility_weights (Optional[Dict[str, float]]): the ranking score is
            ``sum_t w_t * p_t``; default: the probability of the first task not listed
            in ``negative_tasks``.
        negative_tasks (Sequence[str]): tasks where lower is better (for reporting).
        min_candidates (int): requests with fewer candidates are left out: with at most
            ``k`` candidates every ranking puts the same ones in the top ``k``. Default
            ``k``, so a request counts when the ranking can change its top ``k``.

    Example::

        hit = HitAtK(["save", "hide"], k=3, negative_tasks=["hide"])
        predictions = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.5, 0.5]])
        labels = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
        hit.update(predictions, labels, request_ids=torch.tensor([7, 7, 7, 7]))
        hit.compute()  # {'hit@3-save': 2.0, 'hit@3-hide': 0.0, 'hit@3-requests': 1.0}
    """

    def __init__(
        self,
        tasks: Sequence[str],
        k: int = 3,
        utility_weights: Optional[Dict[str, float]] = None,
        negative_tasks: Sequence[str] = tuple(NEGATIVE_TASKS),
        min_candidates: Optional[int] = None,
    ) -> None:
        self.tasks = list(tasks)
        self.k = k
        self.min_candidates = k + 1 if min_candidates is None else min_candidates
        self.negative_tasks = [t for t in negative_tasks if t in self.tasks]
        if utility_weights is None:
            positive = [t for t in self.tasks if t not in self.negative_tasks]
            if not positive:
                raise ValueError(f"tasks {self.tasks}: no positive task to rank by")
            utility_weights = {positive[0]: 1.0}
        unknown = set(utility_weights) - set(self.tasks)
        if unknown:
            raise ValueError(f"utility weights name unknown tasks {sorted(unknown)}")
        self.utility = torch.tensor([utility_weights.get(t, 0.0) for t in self.tasks])
        self.reset()

    def reset(self) -> None:
        self.hits = torch.zeros(len(self.tasks), dtype=torch.float64)
        self.requests = torch.zeros((), dtype=torch.float64)

    def update(
        self, predictions: torch.Tensor, labels: torch.Tensor, request_ids: torch.Tensor
    ) -> None:
        """
        Args:
            predictions (torch.Tensor): probabilities [B, T].
            labels (torch.Tensor): [B, T].
            request_ids (torch.Tensor): [B]; the rows of a request may be in any order.
        """
        if predictions.shape != labels.shape or predictions.shape[1] != len(self.tasks):
            raise ValueError(
                f"predictions {tuple(predictions.shape)}, labels {tuple(labels.shape)}: "
                f"expected [B, {len(self.tasks)}]"
            )
        if predictions.shape[0] == 0:
            return
        utility = predictions.float().cpu() @ self.utility
        request_ids = request_ids.cpu()
        # Group rows by request, best utility first (ties: earlier row first).
        by_utility = torch.argsort(utility, descending=True, stable=True)
        order = by_utility[torch.argsort(request_ids[by_utility], stable=True)]
        sorted_requests = request_ids[order]
        starts = torch.ones_like(sorted_requests, dtype=torch.bool)
        starts[1:] = sorted_requests[1:] != sorted_requests[:-1]
        segments = torch.cumsum(starts.long(), 0) - 1
        num_requests = int(segments[-1]) + 1
        rank = rank_within_segments(torch.ones_like(starts), segments, num_requests)
        sizes = torch.bincount(segments, minlength=num_requests)
        counted = sizes >= self.min_candidates
        top = order[(rank < self.k) & counted[segments]]
        self.hits += labels.cpu()[top].double().sum(0)
        self.requests += int(counted.sum())

    def compute(self, process_group: Optional[dist.ProcessGroup] = None) -> Dict[str, Optional[float]]:
        """Mean hits per counted request for each task (None when no request counts),
        summed over all ranks first, and ``hit@K-requests``, how many requests counted."""
        totals = torch.cat([self.hits, self.requests.view(1)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals, group=process_group)
        requests = float(totals[-1])
        result: Dict[str, Optional[float]] = {
            f"hit@{self.k}-{t}": float(totals[i]) / requests if requests else None for i, t in enumerate(self.tasks)
        }
        result[f"hit@{self.k}-requests"] = requests
        return result


def rec_tasks(tasks: Sequence[str]) -> List[RecTaskInfo]:
    """torchrec task descriptions whose tensors are named ``{task}-{prediction,label,weight}``."""
    return [
        RecTaskInfo(
            name=task,
            label_name=f"{task}-label",
            prediction_name=f"{task}-prediction",
            weight_name=f"{task}-weight",
        )
        for task in tasks
    ]


def auc_ne_module(
    tasks: Sequence[str],
    batch_size: int,
    world_size: int = 1,
    rank: int = 0,
    process_group: Optional[dist.ProcessGroup] = None,
    window_size: int = 10**9,
) -> RecMetricModule:
    """A ``RecMetricModule`` computing AUC and normalized entropy for every task, reduced
    across ranks by torchrec.

    Args:
        tasks (Sequence[str]): task names.
        batch_size (int): per-rank batch size (torchrec sizes its windows with it).
        world_size, rank (int): the process group layout.
        process_group (Optional[dist.ProcessGroup]): default: the world.
        window_size (int): examples per window; the default keeps the whole evaluation.

    Returns:
        RecMetricModule: feed it :func:`model_outputs`.
    """
    infos = rec_tasks(tasks)
    kwargs = dict(
        world_size=world_size,
        my_rank=rank,
        batch_size=batch_size,
        tasks=infos,
        compute_mode=RecComputeMode.UNFUSED_TASKS_COMPUTATION,
        window_size=window_size,
        process_group=process_group,
    )
    metrics = RecMetricList([AUCMetric(**kwargs), NEMetric(**kwargs)])  # type: ignore[arg-type]
    return RecMetricModule(
        batch_size=batch_size, world_size=world_size, rec_tasks=infos, rec_metrics=metrics
    )


def model_outputs(
    tasks: Sequence[str],
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: Optional[torch.Tensor] = None,
) -> Dict[str, torch.Tensor]:
    """[B, T] logits and labels as the dict a ``RecMetricModule`` updates from."""
    probabilities = torch.sigmoid(logits.float())
    weights = torch.ones(logits.shape[0], device=logits.device) if weights is None else weights
    out: Dict[str, torch.Tensor] = {}
    for i, task in enumerate(tasks):
        out[f"{task}-prediction"] = probabilities[:, i]
        out[f"{task}-label"] = labels[:, i].float()
        out[f"{task}-weight"] = weights.float()
    return out


def evaluate(
    model: nn.Module,
    batches: List[TransActBatch],
    tasks: Sequence[str],
    device: torch.device,
    world_size: int = 1,
    rank: int = 0,
) -> Dict[str, Optional[float]]:
    """AUC, NE and HIT@3 per task and the mean loss over this rank's batches, reduced
    across ranks; every rank returns rank 0's result.

    Args:
        model (nn.Module): the training wrapper (``batch -> (loss, (loss, logits,
            labels))``), sharded or not; it is left in training mode.
        batches (List[TransActBatch]): this rank's evaluation batches.
        tasks (Sequence[str]): the logits' columns.
        device (torch.device): where the model runs.
        world_size, rank (int): the process group layout (a group must exist).

    Returns:
        Dict[str, Optional[float]]: ``auc-{task}``, ``ne-{task}``, ``hit@3-{task}`` and
        ``loss``; AUC and NE are None (with a warning) for a task whose evaluation labels
        hold no positive or no negative example.
    """
    # Every rank must run the same number of forwards (they exchange embeddings).
    count = torch.tensor([len(batches)])
    dist.all_reduce(count, op=dist.ReduceOp.MIN)
    batches = batches[: int(count)]
    batch_size = max((b.batch_size for b in batches), default=1)
    metric_module = auc_ne_module(tasks, batch_size, world_size, rank)
    hit = HitAtK(tasks, k=3)
    # Positives and negatives per task: AUC needs both, NE a base rate strictly in (0, 1).
    counts = torch.zeros(2, len(tasks), dtype=torch.float64)
    losses = []
    model.eval()
    with torch.no_grad():
        for batch in batches:
            batch = batch.to(device)
            loss, (_, logits, labels) = model(batch)
            losses.append(float(loss))
            metric_module.update(model_outputs(tasks, logits, labels, batch.weights))
            positive = labels.double().sum(0).cpu()
            counts += torch.stack([positive, labels.shape[0] - positive])
            hit.update(torch.sigmoid(logits.float()), labels, batch.request_ids)
    model.train()
    raw = metric_module.compute()  # collective; torchrec returns the values on rank 0
    dist.all_reduce(counts)
    result: Dict[str, Optional[float]] = {}
    for i, task in enumerate(tasks):  # the window spans the whole evaluation
        defined = bool((counts[:, i] > 0).all())
        if not defined and rank == 0:
            kind = "positive" if counts[0, i] == 0 else "negative"
            warnings.warn(f"evaluation: task {task!r} has no {kind} example; its AUC and NE are undefined")
        for name, key in (("auc", f"auc-{task}|window_auc"), ("ne", f"ne-{task}|lifetime_ne")):
            if key in raw:
                result[f"{name}-{task}"] = float(raw[key]) if defined else None
    result.update(hit.compute())
    total = torch.tensor([sum(losses), len(losses)], dtype=torch.float64)
    dist.all_reduce(total)
    result["loss"] = float(total[0] / max(total[1], 1.0))
    shared = [result]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]
