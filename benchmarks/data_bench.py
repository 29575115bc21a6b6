#!/usr/bin/env python3
"""Examples per second of every data source, next to the default model's training speed.

The default model is TransAct-DCN as the paper configures it (K = 10 + max pool, 2 layers,
1 head, FFN 32, 32-d action and item embeddings, 100 actions, 24 h time window; full-rank
DCN-V2, 3 cross layers) on the synthetic data's default catalogue, trained with Adam.
Prints one JSON object; ``feeds_x_model`` is a source's examples/s over the model's. The
prepare step (``transact-prepare``: a log -> Parquet shards of requests) runs on ten
copies of the 814-user Taobao log (840k rows), all cores, and its shards are then read
back into training batches.

    python benchmarks/data_bench.py
"""

import argparse
import json
import os
import platform
import time
from typing import Callable, Dict, Iterable, Optional

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_transact import TransAct, TransActConfig
from torchrec_transact.data.action_logs import load_preset
from torchrec_transact.data.criteo import CriteoWithSequences, read_criteo_tsv
from torchrec_transact.data.synthetic import (
    SPARSE_FEATURES,
    SyntheticActionData,
    SyntheticConfig,
    TASKS,
)
from torchrec_transact.models import TransActDCN, TransActTrain


def examples_per_second(make_batches: Callable[[], Iterable], min_seconds: float = 2.0) -> float:
    """Drains fresh iterators until ``min_seconds`` have passed."""
    examples, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        for batch in make_batches():
            examples += batch.batch_size
            if time.perf_counter() - start >= min_seconds:
                break
    return examples / (time.perf_counter() - start)


def default_model_speed(batch_size: int, steps: int) -> float:
    config = SyntheticConfig()
    data = iter(SyntheticActionData(config, batch_size, seed=0))
    torch.manual_seed(0)
    transact = TransAct(
        TransActConfig(num_action_types=config.num_action_types, num_items=config.num_items)
    )
    sizes = [config.num_users, config.num_items, config.num_categories]
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name=name, embedding_dim=16, num_embeddings=size, feature_names=[name])
            for name, size in zip(SPARSE_FEATURES, sizes)
        ]
    )
    model = TransActTrain(
        TransActDCN(
            ebc, transact, config.dense_in_features, [64], [256, 128], dcn_num_layers=3,
            user_embedding_dim=config.user_embedding_dim, tasks=TASKS,
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [next(data) for _ in range(steps + 2)]  # generation is not timed here

    def step(batch) -> None:  # type: ignore[no-untyped-def]
        loss, _ = model(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for batch in batches[:2]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[2:]:
        step(batch)
    return steps * batch_size / (time.perf_counter() - start)


def prepared_log_speed(source: str, copies: int, shards: int, batch_size: int) -> Dict[str, float]:
    """The prepare step on ``copies`` copies of a Taobao log (each copy's users renamed, so
    the log is ``copies`` times larger), then reading its shards into training batches:
    examples (candidates) per second of each, and the log's size."""
    import tempfile

    from torchrec_transact.data.prepare import prepare, PrepareOptions
    from torchrec_transact.data.prepared import PreparedFolder

    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "log.csv")
        with open(source) as f, open(log, "w") as out:
            lines = f.read().splitlines()
            for copy in range(copies):
                out.writelines(f"{copy}_{line}\n" for line in lines)
        options = PrepareOptions("taobao", [log], os.path.join(tmp, "prepared"), shards=shards)
        start = time.perf_counter()
        meta = prepare(options, workers=os.cpu_count() or 1)["meta"]
        prepare_s = time.perf_counter() - start
        folder = PreparedFolder(options.output_dir)
        examples, start = 0, time.perf_counter()
        for batch in folder.batches("train", folder.shards, batch_size, shuffle=True):
            examples += batch.batch_size
        read = examples / (time.perf_counter() - start)
        total = _candidate_count(folder)
    return {"rows": float(meta["report"]["rows"]), "megabytes": os.path.getsize(source) * copies / 2**20,
            "prepare_examples_per_s": total / prepare_s, "shards_to_batches_examples_per_s": read}


def _candidate_count(folder) -> int:  # type: ignore[no-untyped-def]
    """Candidates (examples) of every split in a prepared folder."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    return sum(
        int(pc.sum(pc.list_value_length(pq.read_table(shard, columns=["candidate_item"]).column(0))).as_py() or 0)
        for shard in folder.shards
    )


def run(batch_size: int = 500, model_steps: int = 10, data_dir: Optional[str] = None,
        log_copies: int = 10) -> Dict[str, object]:
    """Examples/s of every source found (the real samples under ``data_dir``) and of the
    default model's training step."""
    model = default_model_speed(batch_size, model_steps)
    sources: Dict[str, float] = {}
    synthetic = SyntheticActionData(SyntheticConfig(), batch_size, seed=0, num_batches=10)
    sources["synthetic"] = examples_per_second(lambda: synthetic)

    criteo_path = os.path.join(data_dir or "", "criteo_tiny", "train.tsv")
    if data_dir and os.path.exists(criteo_path):
        start = time.perf_counter()
        arrays = read_criteo_tsv([criteo_path])
        parse = len(arrays) / (time.perf_counter() - start)
        criteo = CriteoWithSequences(arrays, batch_size)
        batches = examples_per_second(lambda: criteo)
        sources["criteo_tsv_parse"] = parse
        sources["criteo_batches_with_sequences"] = batches
        sources["criteo_end_to_end"] = 1.0 / (1.0 / parse + 1.0 / batches)
    for preset, relative in (
        ("movielens", "movielens_100k/ml-100k.inter"),
        ("taobao", "taobao_user_behavior/UserBehavior.csv"),
    ):
        path = os.path.join(data_dir or "", relative)
        if data_dir and os.path.exists(path):
            _, requests = load_preset(preset, path, max_request_size=10)
            sources[preset] = examples_per_second(
                lambda: requests.batches("train", batch_size, shuffle=True)
            )
    prepared: Dict[str, float] = {}
    taobao = os.path.join(data_dir or "", "taobao_user_behavior", "UserBehavior_814users.csv")
    if data_dir and os.path.exists(taobao) and log_copies > 0:
        prepared = prepared_log_speed(taobao, log_copies, shards=16, batch_size=batch_size)
        sources[f"prepare (taobao x{log_copies}: log -> shards)"] = prepared["prepare_examples_per_s"]
        sources["prepared shards -> batches"] = prepared["shards_to_batches_examples_per_s"]
    return {
        "benchmark": "data_sources",
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "batch_size": batch_size,
        "default_model_train_examples_per_s": model,
        "examples_per_s": sources,
        "feeds_x_model": {name: speed / model for name, speed in sources.items()},
        "prepared_log": prepared,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--model-steps", type=int, default=10)
    parser.add_argument("--data-dir", default=os.environ.get("TRANSACT_DATA_DIR"),
                        help="the real data samples (default: $TRANSACT_DATA_DIR)")
    parser.add_argument("--log-copies", type=int, default=10,
                        help="the prepare step runs on this many copies of the 814-user Taobao log (0: skip)")
    args = parser.parse_args()
    print(json.dumps(run(args.batch_size, args.model_steps, args.data_dir, args.log_copies), indent=2))


if __name__ == "__main__":
    main()
