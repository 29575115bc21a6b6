#!/usr/bin/env python3
"""DistributedModelParallel for TransAct models: sharders, planner constraints, plan.

torchrec's planner would keep small tables data-parallel (replicated, updated through
DDP like dense weights). Here every EmbeddingBagCollection table and TransAct's item
table is sharded table-wise or row-wise by default, so all of them run on FBGEMM's
table-batched kernels with a fused optimizer (on CPU: SGD, Adagrad or RowWiseAdagrad).
"""

from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import ParameterConstraints
from torchrec.distributed.types import ModuleSharder, ShardingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection, EmbeddingCollection

DEFAULT_SHARDING_TYPES = (ShardingType.TABLE_WISE.value, ShardingType.ROW_WISE.value)


def embedding_table_names(model: nn.Module) -> List[str]:
    """Names of every table of the model's EmbeddingBagCollections and EmbeddingCollections."""
    names: List[str] = []
    for module in model.modules():
        if isinstance(module, EmbeddingBagCollection):
            names += [c.name for c in module.embedding_bag_configs()]
        elif isinstance(module, EmbeddingCollection):
            names += [c.name for c in module.embedding_configs()]
    return names


def embedding_sharders(fused_params: Dict[str, Any]) -> List[ModuleSharder[nn.Module]]:
    """Sharders for EBCs and ECs whose tables update in their backward with ``fused_params``
    (e.g. ``{"optimizer": EmbOptimType.EXACT_ROWWISE_ADAGRAD, "learning_rate": 0.05}``)."""
    return [
        EmbeddingBagCollectionSharder(fused_params=fused_params),
        EmbeddingCollectionSharder(fused_params=fused_params),
    ]


def shard_model(
    model: nn.Module,
    device: torch.device,
    fused_params: Dict[str, Any],
    process_group: Optional[dist.ProcessGroup] = None,
    sharding_types: Sequence[str] = DEFAULT_SHARDING_TYPES,
) -> DistributedModelParallel:
    """Plans and wraps ``model`` in ``DistributedModelParallel``.

    Args:
        model (nn.Module): unsharded model (its tables may live on meta).
        device (torch.device): this rank's compute device.
        fused_params (Dict[str, Any]): optimizer of the embedding tables.
        process_group (Optional[dist.ProcessGroup]): default: the world.
        sharding_types (Sequence[str]): allowed for every table.

    Returns:
        DistributedModelParallel: the sharded model; ``.plan`` holds the plan.
    """
    group = process_group or dist.GroupMember.WORLD
    sharders = embedding_sharders(fused_params)
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=dist.get_world_size(group), compute_device=device.type),
        constraints={
            name: ParameterConstraints(sharding_types=list(sharding_types))
            for name in embedding_table_names(model)
        },
    )
    plan = planner.collective_plan(model, sharders, group)
    return DistributedModelParallel(model, device=device, plan=plan, sharders=sharders)


@torch.no_grad()
def load_unsharded_state_dict(
    model: DistributedModelParallel,
    state_dict: Dict[str, torch.Tensor],
    strict: bool = True,
) -> None:
    """Copies full (unsharded) tensors into a sharded model, each rank its own shards.

    ``DistributedModelParallel`` initialises sharded tables afresh rather than copying the
    unsharded module's weights; this loads them (pretrained item vectors, a model trained
    without sharding, or the exact initial weights of a reference run).

    Args:
        model (DistributedModelParallel): the sharded model.
        state_dict (Dict[str, torch.Tensor]): the unsharded model's ``state_dict()``.
        strict (bool): every key of the model must be given; False loads a subset
            (e.g. only a pretrained item table).
    """
    targets = model.state_dict()
    unknown = set(state_dict) - set(targets)
    if unknown:
        raise KeyError(f"keys {sorted(unknown)} are not in the sharded model")
    for key, target in targets.items():
        if key not in state_dict:
            if strict:
                raise KeyError(f"{key!r} is missing from the unsharded state dict")
            continue
        source = state_dict[key]
        if isinstance(target, ShardedTensor):
            if tuple(source.shape) != tuple(target.size()):
                raise ValueError(
                    f"{key!r}: unsharded shape {tuple(source.shape)}, sharded "
                    f"{tuple(target.size())}"
                )
            for shard in target.local_shards():
                rows, cols = (
                    slice(offset, offset + size)
                    for offset, size in zip(
                        shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    )
                )
                shard.tensor.copy_(source[rows, cols])
        else:
            target.copy_(source)
