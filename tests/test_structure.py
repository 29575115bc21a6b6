"""The library's seams: the config and its flags, the data registry, the model factory and
model.json, the encoder and ranking-model contracts, the KJT helpers, the configurable
loss, step hooks, and the one-way imports between the entry points."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import assert_one_line_exit
from torchrec_transact.config import build_parser, ConfigError, ModelConfig, parse_args, TrainConfig
from torchrec_transact.data.kjt import categorical_kjt, repeat_per_candidate
from torchrec_transact.data.registry import data_sources, DataOptions, open_data, register_data_source
from torchrec_transact.models import RankingModel
from torchrec_transact.models.factory import build_model, model_description, read_model_description
from torchrec_transact.modules.baselines import build_sequence_encoder, SEQUENCE_ENCODERS
from torchrec_transact.modules.sequence import SequenceEncoder, TransActConfig
from torchrec_transact.trainer import task_loss

SMALL = [
    "--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3", "--embedding-dim", "8",
    "--eval-batches", "2", "--log-interval", "5", "--eval-interval", "0",
]


def test_help_documents_every_flag_with_choices_and_default() -> None:
    text = " ".join(build_parser().format_help().split())  # lines folded by the terminal width
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text, f.name
    for flag, choices in [
        ("--data", data_sources()), ("--model", ["dcn", "dlrm"]), ("--encoder", sorted(SEQUENCE_ENCODERS)),
        ("--early-fusion", ["concat", "append", "none"]), ("--pipeline", ["auto", "sparse_dist", "plain"]),
        ("--device", ["auto", "cpu", "cuda"]),
    ]:
        assert f"{flag} {{{','.join(choices)}}}" in text, flag
    assert "(default: 500)" in text and "(default: transact)" in text  # batch size, encoder
    # One help line per field, never a bare name.
    assert all(f.metadata["help"] for f in dataclasses.fields(TrainConfig))


@pytest.mark.parametrize(
    "values,message",
    [
        ({"latest_k": 0, "max_pool": False}, "the output would be empty"),  # TransActConfig's own check
        ({"early_fusion": "sum"}, "--early-fusion 'sum': expected one of"),
        ({"pipeline": "fast"}, "--pipeline 'fast': expected one of"),
        ({"checkpoint_interval": -1}, "--checkpoint-interval -1: must be >= 0"),
        ({"resume": True, "init_from": "x"}, "--resume and --init-from exclude each other"),
    ],
)
def test_bad_configs_name_the_flag(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


def test_json_list_flags_and_config_file(tmp_path) -> None:
    config, debug = parse_args(["--label-weight-matrix", "[[1, 0], [0.5, 2]]", "--negative-weight", "3", "--debug"])
    assert config.label_weight_matrix == [[1, 0], [0.5, 2]] and config.negative_weight == [3.0] and debug
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"negative_weight": 0.5, "tasks": ["save", "hide"]}))
    config, _ = parse_args(["--config", str(path)])
    assert config.negative_weight == [0.5] and config.check_data(["click", "save", "hide"]) == ["save", "hide"]
    with pytest.raises(ConfigError, match="--label-weight-matrix must be 3 x 3"):
        TrainConfig(label_weight_matrix=[[1.0]]).check_data(["click", "save", "hide"])
    with pytest.raises(ConfigError, match="--negative-weight has 2 values"):
        TrainConfig(negative_weight=[1.0, 2.0]).check_data(["click", "save", "hide"])


def test_label_weight_matrix_changes_the_loss_as_the_formula_says() -> None:
    """w[n, i] = sum_j M[i, j] y[n, j] + m0[i] (1 - y[n, i]), times BCE, averaged."""
    matrix = [[1.0, 0.5, 0.0], [0.0, 2.0, 0.0], [0.3, 0.0, 1.0]]
    config = TrainConfig(label_weight_matrix=matrix, negative_weight=[1.0, 0.5, 2.0])
    loss_fn = task_loss(config, ["click", "save", "hide"])
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7]])
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    expected = 0.0
    for n in range(2):
        for i in range(3):
            y = float(labels[n, i])
            p = 1.0 / (1.0 + float(torch.exp(-logits[n, i])))
            bce = -(y * torch.log(torch.tensor(p)) + (1 - y) * torch.log(torch.tensor(1 - p)))
            w = sum(matrix[i][j] * float(labels[n, j]) for j in range(3)) + [1.0, 0.5, 2.0][i] * (1 - y)
            expected += w * float(bce)
    got = float(loss_fn(logits, labels))
    assert abs(got - expected / 6) < 1e-6
    identity = float(task_loss(TrainConfig(), ["click", "save", "hide"])(logits, labels))
    assert abs(identity - float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))) < 1e-6
    assert abs(got - identity) > 0.05


def test_a_registered_source_is_a_choice_everywhere() -> None:
    def tiny(options: DataOptions):
        return open_data("synthetic", dataclasses.replace(options, max_seq_len=5))

    register_data_source("tiny_synthetic", tiny, needs_path=False, description="synthetic, 5 actions")
    assert "tiny_synthetic" in data_sources()
    assert "tiny_synthetic: synthetic, 5 actions" in build_parser().format_help().replace("\n", " ")
    spec = open_data(TrainConfig(data="tiny_synthetic").data, DataOptions(batch_size=20))
    assert next(spec.train(0, 1, 0)).sequence_features["item_id"].lengths().max() <= 5
    with pytest.raises(ValueError, match="--data criteo needs --data-path"):
        open_data("criteo", DataOptions())
    with pytest.raises(ValueError, match="use a multiple of 10"):
        open_data("synthetic", DataOptions(batch_size=15))


def _spec():
    from torchrec_transact.data.registry import ModelSpec

    return ModelSpec(tasks=["click", "save"], dense_in_features=3, user_embedding_dim=2,
                     sparse_tables=[("user", 30), ("category", 7)], num_items=40, num_action_types=3)


@pytest.mark.parametrize("model", ["dcn", "dlrm"])
def test_model_description_round_trip_rebuilds_the_same_model(model: str) -> None:
    config = ModelConfig(model=model, encoder="bst", embedding_dim=8, max_seq_len=12, latest_k=2)
    text = model_description(config, _spec(), ["save"], config={"note": "any extra field"})
    rebuilt_config, spec, tasks = read_model_description(text)
    assert rebuilt_config == config and spec == _spec() and tasks == ["save"]
    torch.manual_seed(0)
    first = build_model(_spec(), config, ["save"])
    torch.manual_seed(0)
    second = build_model(spec, rebuilt_config, tasks)
    assert first.state_dict().keys() == second.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    # The layout of earlier releases: the whole training config and the encoder beside it.
    legacy = json.dumps({"config": dataclasses.asdict(TrainConfig(model=model, embedding_dim=8)),
                         "spec": dataclasses.asdict(_spec()), "encoder": "avg_pool", "tasks": ["click"]})
    old_config, _, _ = read_model_description(legacy)
    assert old_config.encoder == "avg_pool" and old_config.model == model


@pytest.mark.parametrize("name", sorted(SEQUENCE_ENCODERS))
def test_every_encoder_keeps_the_contract_serving_relies_on(name: str) -> None:
    encoder = build_sequence_encoder(name, TransActConfig(num_action_types=3, num_items=40, latest_k=2))
    assert isinstance(encoder, SequenceEncoder)
    assert (encoder.transformer is not None) == (name in ("transact", "bst", "bst_action", "vanilla_transformer"))
    assert (encoder.item_table is None) == (name == "none")
    if encoder.item_table is not None:
        assert tuple(encoder.item_table.shape) == (40, 32)
    model = build_model(_spec(), ModelConfig(encoder=name, embedding_dim=8, latest_k=2), ["click"])
    assert isinstance(model, RankingModel)
    assert model.dense_width == 5  # 3 dense features and the 2-wide user vector
    assert model.sparse_feature_names == ["user", "category"]


def test_repeat_per_candidate_equals_the_loop() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        requests = int(torch.randint(0, 6, (1,), generator=g))
        lengths = torch.randint(0, 5, (requests,), generator=g)
        counts = torch.randint(0, 4, (requests,), generator=g)
        values = torch.arange(int(lengths.sum()))
        starts = torch.cumsum(lengths, 0) - lengths
        expected_values, expected_lengths = [], []
        for r in range(requests):
            for _ in range(int(counts[r])):
                expected_values += values[starts[r] : starts[r] + lengths[r]].tolist()
                expected_lengths.append(int(lengths[r]))
        index, example_lengths = repeat_per_candidate(lengths, counts)
        assert values[index].tolist() == expected_values and example_lengths.tolist() == expected_lengths


def test_categorical_kjt_puts_one_id_per_feature() -> None:
    kjt = categorical_kjt(["a", "b", "c"], torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert kjt["a"].values().tolist() == [1, 4] and kjt["c"].values().tolist() == [3, 6]
    assert kjt.lengths().tolist() == [1] * 6
    with pytest.raises(ValueError, match=r"expected \[B, 3\]"):
        categorical_kjt(["a", "b", "c"], torch.zeros(2, 2, dtype=torch.long))


def test_step_hooks_see_every_step_and_can_stop_a_run(tmp_path) -> None:
    from torchrec_transact.train import main

    seen = []
    main(SMALL + ["--steps", "4", "--output-dir", str(tmp_path / "a")], step_hooks=[lambda *a: seen.append(a)])
    assert seen == [(step, 0, 1) for step in range(1, 5)]

    class Stop(Exception):
        pass

    def stop_at_3(step: int, rank: int, world: int) -> None:
        if step == 3:
            raise Stop

    from torchrec_transact.config import parse_args
    from torchrec_transact.trainer import train

    config, _ = parse_args(SMALL + ["--steps", "10", "--output-dir", str(tmp_path / "b")])
    with pytest.raises(Stop):
        train(config, step_hooks=[stop_at_3])
    import torch.distributed as dist

    assert not dist.is_initialized()  # the group is torn down even when a hook fails
    # The command line turns it into one line and exit 1.
    assert_one_line_exit(
        lambda: main(SMALL + ["--steps", "10", "--output-dir", str(tmp_path / "c")], step_hooks=[stop_at_3]),
        1, "Stop:",
    )


@pytest.mark.parametrize("module", ["torchrec_transact.serving", "torchrec_transact.ablation"])
def test_peers_do_not_import_the_training_command_line(module: str) -> None:
    code = f"import sys, {module}; print('torchrec_transact.train' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"


def test_loss_weights_come_from_the_config_not_from_a_checkpoint() -> None:
    """M and m0 are not saved with the model: --resume and --init-from keep the run's own."""
    from torchrec_transact.models import TransActTrain

    model = build_model(_spec(), ModelConfig(encoder="none", embedding_dim=8), ["click", "save"])
    config = TrainConfig(label_weight_matrix=[[5.0, 0.0], [0.0, 5.0]])
    wrapper = TransActTrain(model, loss=task_loss(config, ["click", "save"]))
    assert not [k for k in wrapper.state_dict() if k.startswith("loss_fn.")]
    assert torch.equal(wrapper.loss_fn.label_weight_matrix, 5.0 * torch.eye(2))


@pytest.mark.parametrize(
    "values,message",
    [
        ({"max_seq_len": 0}, "--max-seq-len 0, expected >= 1"),
        ({"steps": "400"}, "--steps '400': expected int"),
        ({"device": "cpu", "embedding_optimizer": "adam"}, "--embedding-optimizer adam: FBGEMM's CPU kernels"),
        ({"negative_weight": "x"}, "--negative-weight 'x': expected a number or a JSON list"),
    ],
)
def test_config_file_values_are_checked_with_the_flag_named(values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**values)


def test_the_encoder_core_and_request_encoder_run_without_torchrec() -> None:
    """A bare PyTorch (a CUDA machine without torchrec or fbgemm) imports the encoder
    core, the request encoder and the CUDA-graph helper and runs them; the package's
    torchrec parts say what is missing."""
    code = """
import sys
for name in ("torchrec", "fbgemm_gpu"):
    sys.modules[name] = None  # importing them now raises ImportError
import torch
from torchrec_transact.modules.config import TransActConfig
from torchrec_transact.modules.arch import TransActSequenceArch
from torchrec_transact.serving.dedup import RequestTransAct
from torchrec_transact.serving.cuda_graphs import CapturedBucket
arch = TransActSequenceArch(TransActConfig(num_action_types=3, num_items=10, latest_k=2)).eval()
lengths = torch.tensor([3, 0, 2])
out = arch.encode(lengths, torch.tensor([5.0, 60.0, 90.0, 7.0, 8.0]), torch.tensor([0, 1, 2, 1, 0]),
                  torch.randn(5, 32), torch.randn(3, 32))
assert out.shape == (3, 3 * 96) and bool(out[1].eq(0).all())
scores = RequestTransAct(arch)(torch.tensor([1, 0]), torch.randn(2, 32), torch.randn(4, 32))
assert scores.shape == (4, 3 * 96)
try:
    from torchrec_transact import TransAct
except ImportError as error:
    assert "needs torchrec" in str(error)
else:
    raise AssertionError("TransAct imported without torchrec")
import torchrec_transact
assert torchrec_transact.TransActConfig is TransActConfig and "TransAct" in dir(torchrec_transact)
assert torchrec_transact.modules.arch.TransActSequenceArch is TransActSequenceArch
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_gpu_check_runs_on_a_bare_pytorch() -> None:
    """benchmarks/gpu_check.py (run on GPU machines without torchrec) works with torchrec
    and fbgemm absent; here on CPU, where it skips the CUDA graphs."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import runpy, sys\n"
        "sys.modules['torchrec'] = sys.modules['fbgemm_gpu'] = None\n"
        "sys.argv = ['gpu_check.py', '--device', 'cpu', '--batch', '8', '--repeats', '3', '--candidates', '1,5']\n"
        f"runpy.run_path({os.path.join(root, 'benchmarks', 'gpu_check.py')!r}, run_name='__main__')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["encoder"]["fp32"]["examples_per_s"] > 0 and [s["candidates"] for s in report["serving"]] == [1, 5]
    assert report["cuda_graphs"] == "not run: no CUDA device"
