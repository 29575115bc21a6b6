#!/usr/bin/env python3
"""Examples per second of every data source, next to the default model's training speed.

The default model is TransAct-DCN as the paper configures it (K = 10 + max pool, 2 layers,
1 head, FFN 32, 32-d action and item embeddings, 100 actions, 24 h time window; full-rank
DCN-V2, 3 cross layers) on the synthetic data's default catalogue, trained with Adam.
Prints one JSON object; ``feeds_x_model`` is a source's examples/s over the model's.

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


def run(batch_size: int = 500, model_steps: int = 10, data_dir: Optional[str] = None) -> Dict[str, object]:
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
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--model-steps", type=int, default=10)
    parser.add_argument("--data-dir", default=os.environ.get("TRANSACT_DATA_DIR"),
                        help="the real data samples (default: $TRANSACT_DATA_DIR)")
    args = parser.parse_args()
    print(json.dumps(run(args.batch_size, args.model_steps, args.data_dir), indent=2))


if __name__ == "__main__":
    main()
