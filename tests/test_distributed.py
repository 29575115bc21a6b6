"""TransAct under DistributedModelParallel: 2 CPU processes, gloo, sharded item table."""

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from helpers import kjt_from_examples, random_example, small_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _ToyTask(torch.nn.Module):
    """TransAct regressed onto 1.0: (loss, output), the contract of torchrec's pipelines."""

    def __init__(self, transact: torch.nn.Module) -> None:
        super().__init__()
        self.transact = transact

    def forward(self, features):  # type: ignore[no-untyped-def]
        out = self.transact(features)
        loss = (out - 1.0).square().mean()
        return loss, (loss.detach(), out.detach())


def _worker(rank: int, world_size: int, port: int) -> None:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.embedding import (
        EmbeddingCollectionSharder,
        ShardedEmbeddingCollection,
    )
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from torchrec.distributed.types import ShardingType
    from torchrec.optim.keyed import KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from torchrec_transact import TransAct

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # identical initial weights on every rank
        model = _ToyTask(
            TransAct(small_config(num_items=1000, time_window_s=0.0, dropout=0.0))
        )
        unsharded = copy.deepcopy(model.transact)
        table_before = unsharded.item_embedding_collection.embeddings["transact_items"].weight.detach().clone()

        sharder = EmbeddingCollectionSharder(
            fused_params={"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": 0.5}
        )
        planner = EmbeddingShardingPlanner(
            topology=Topology(world_size=world_size, compute_device="cpu"),
            constraints={
                "transact_items": ParameterConstraints(
                    sharding_types=[ShardingType.ROW_WISE.value]
                )
            },
        )
        plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
        dmp = DistributedModelParallel(
            model, device=torch.device("cpu"), plan=plan, sharders=[sharder]
        )
        sharded = dmp.module.transact.item_embedding_collection
        assert isinstance(sharded, ShardedEmbeddingCollection), type(sharded)
        table_plan = plan.get_plan_for_module("transact.item_embedding_collection")["transact_items"]
        assert table_plan.sharding_type == ShardingType.ROW_WISE.value
        assert sorted(s.placement.rank() for s in table_plan.sharding_spec.shards) == [0, 1]

        # The sharded table holds this rank's rows of the original weights.
        state = dmp.state_dict()
        key = "transact.item_embedding_collection.embeddings.transact_items.weight"
        weight = state[key]
        (local,) = weight.local_shards()
        rows = local.metadata.shard_offsets[0]
        size = local.tensor.shape[0]
        assert size < 1000  # really sharded: no rank holds the whole table
        assert_close(local.tensor, table_before[rows : rows + size])

        dense_optimizer = KeyedOptimizerWrapper(
            dict(in_backward_optimizer_filter(dmp.named_parameters())),
            lambda params: torch.optim.SGD(params, lr=0.1),
        )
        g = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
        kjt = kjt_from_examples(
            [random_example(g, n, num_items=1000) for n in (6, 0, 12, 3, 9, 1)]
        )
        _, (_, out) = dmp(kjt)
        assert_close(out, unsharded(kjt), rtol=1e-5, atol=1e-5)
        losses = []
        for _ in range(3):
            dense_optimizer.zero_grad()
            loss, _ = dmp(kjt)
            loss.backward()
            dense_optimizer.step()
            losses.append(float(loss.detach()))
        assert all(torch.isfinite(torch.tensor(losses))), losses
        assert losses[-1] < losses[0], losses
        after = dmp.state_dict()[key]
        assert not torch.equal(after.local_shards()[0].tensor, table_before[rows : rows + size])

        # torchrec's pipelined training finds the item table fed straight by the batch
        # and moves its input distribution ahead of the forward.
        pipeline = TrainPipelineSparseDist(dmp, dense_optimizer, torch.device("cpu"))
        batches = iter([kjt] * 4)
        pipelined_losses = [float(pipeline.progress(batches)[0]) for _ in range(4)]
        assert all(torch.isfinite(torch.tensor(pipelined_losses))), pipelined_losses
        assert len(pipeline._pipelined_modules) == 1, pipeline._pipelined_modules
        assert pipelined_losses[-1] < losses[-1], (losses, pipelined_losses)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_dmp_two_processes_shards_item_table_and_trains() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(
        _worker, args=(2, _free_port()), nprocs=2, join=True, start_method="spawn"
    )


def _models_worker(rank: int, world_size: int, port: int, kind: str) -> None:
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from torchrec.distributed.types import ShardingType
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.optim.keyed import KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from torchrec_transact import TransAct
    from torchrec_transact.data.category_match import CategoryMatchTask
    from torchrec_transact.models import TransActDCN, TransActDLRM, TransActTrain
    from torchrec_transact.sharding import load_unsharded_state_dict, shard_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        task = CategoryMatchTask(num_items=200, num_categories=10, max_seq_len=10)
        config = small_config(
            num_action_types=3, num_items=200, max_seq_len=10, dropout=0.0, time_window_s=0.0
        )
        ebc = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(name="candidate", embedding_dim=8, num_embeddings=200,
                                   feature_names=["candidate_item"]),
                EmbeddingBagConfig(name="user", embedding_dim=8, num_embeddings=100,
                                   feature_names=["user_bucket"]),
            ]
        )
        if kind == "dlrm":
            net = TransActDLRM(ebc, TransAct(config), 13, [16, 8], [16], tasks=["click"])
        else:
            net = TransActDCN(ebc, TransAct(config), 13, [8], [16], dcn_num_layers=2, tasks=["click"])
        model = TransActTrain(net)
        reference = copy.deepcopy(model)

        lr, emb_lr = 0.05, 0.5
        # The reference minimises the mean over ranks of the local losses; DDP averages
        # dense gradients across ranks and the sharded tables' updates match that mean
        # too (measured: the same learning rate reproduces the unsharded steps).
        fused = {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": emb_lr}
        dmp = shard_model(model, torch.device("cpu"), fused)
        # DMP initialises sharded tables afresh; start from the reference's weights.
        load_unsharded_state_dict(dmp, reference.state_dict())
        sharding_types = {
            table: p.sharding_type
            for module_plan in dmp.plan.plan.values()
            for table, p in module_plan.items()
        }
        assert set(sharding_types) == {"candidate", "user", "transact_items"}, sharding_types
        assert ShardingType.DATA_PARALLEL.value not in sharding_types.values(), sharding_types
        # Every table runs on FBGEMM's table-batched kernels with the fused optimizer
        # (table-wise shards live on one rank only: gather what every rank holds).
        local_fused = {name.rsplit(".", 2)[-2] for name in dmp.fused_optimizer.params}
        everyone: list = [None] * world_size
        dist.all_gather_object(everyone, local_fused)
        assert set.union(*everyone) == {"candidate", "user", "transact_items"}, everyone
        dense_optimizer = KeyedOptimizerWrapper(
            dict(in_backward_optimizer_filter(dmp.named_parameters())),
            lambda params: torch.optim.SGD(params, lr=lr),
        )
        embedding_params = [
            p for name, p in reference.named_parameters()
            if "embedding_bags" in name or "item_embedding_collection" in name
        ]
        other_params = [
            p for name, p in reference.named_parameters()
            if not ("embedding_bags" in name or "item_embedding_collection" in name)
        ]
        reference_optimizer = torch.optim.SGD(
            [{"params": embedding_params, "lr": emb_lr}, {"params": other_params, "lr": lr}]
        )
        batches = [
            task.ranking_batch(16, torch.Generator().manual_seed(100 + r))
            for r in range(world_size)
        ]
        for step in range(3):
            loss, _ = dmp(batches[rank])
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            mean_loss /= world_size
            reference_loss = torch.stack([reference(b)[0] for b in batches]).mean()
            assert_close(
                mean_loss, reference_loss.detach(), rtol=1e-4, atol=1e-5,
                msg=lambda m: f"{kind} step {step}: {m}",
            )
            dense_optimizer.zero_grad()
            loss.backward()
            dense_optimizer.step()
            reference_optimizer.zero_grad()
            reference_loss.backward()
            reference_optimizer.step()

        # torchrec's pipeline finds both sharded modules fed straight from the batch
        # (the EBC from batch.sparse_features, TransAct's table from sequence_features).
        pipeline = TrainPipelineSparseDist(dmp, dense_optimizer, torch.device("cpu"))
        stream = iter([batches[rank]] * 3)
        pipelined = [float(pipeline.progress(stream)[0]) for _ in range(3)]
        assert len(pipeline._pipelined_modules) == 2, pipeline._pipelined_modules
        assert all(torch.isfinite(torch.tensor(pipelined))), pipelined
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", ["dlrm", "dcn"])
def test_sharded_model_steps_match_the_unsharded_model(kind: str) -> None:
    """Two processes, default planner, fused SGD on the EBC and TransAct tables: the loss
    of three training steps equals the unsharded model's from the same initial weights."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(
        _models_worker, args=(2, _free_port(), kind), nprocs=2, join=True, start_method="spawn"
    )
