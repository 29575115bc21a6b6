#!/usr/bin/env python3
"""Ranking models by name, and the description saved with each checkpoint to rebuild them.

    model = build_model(spec, ModelConfig(model="dcn", encoder="transact"), tasks)
    model, description = load_trained_model("outputs/main")   # a transact-train run

Every checkpoint holds ``model.json``: the :class:`ModelConfig`, the data's
:class:`ModelSpec` (tasks, dense width, tables, vocabularies) and the run's tasks, which is
all :func:`build_model` needs; :func:`load_trained_model` reads it and loads the weights.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Sequence, Tuple

from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_transact.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from torchrec_transact.config import ModelConfig
from torchrec_transact.data.registry import ModelSpec
from torchrec_transact.models.dcn import TransActDCN
from torchrec_transact.models.dlrm import TransActDLRM
from torchrec_transact.models.train_wrapper import TransActTrain
from torchrec_transact.modules.baselines import build_sequence_encoder

MODEL_JSON = "model.json"
VOCABULARY_JSON = "vocabulary.json"  # raw ids of the tables, for models trained on logs
# The dense arches of the models transact-train builds.
DENSE_ARCH_LAYER_SIZES = [64]
OVER_ARCH_LAYER_SIZES = [256, 128]
DCN_NUM_LAYERS = 3


def build_model(spec: ModelSpec, config: ModelConfig, tasks: Sequence[str]) -> nn.Module:
    """The unsharded ranking model (``TransActDCN`` or ``TransActDLRM``); shard it with
    :func:`torchrec_transact.sharding.shard_model`.

    Args:
        spec (ModelSpec): the data's shapes.
        config (ModelConfig): the architecture (a ``TrainConfig`` works too).
        tasks (Sequence[str]): the heads, a subset of ``spec.tasks``.

    Returns:
        nn.Module: a :class:`~torchrec_transact.models.RankingModel`.

    Example::

        spec = ModelSpec(tasks=["click"], dense_in_features=4, user_embedding_dim=0,
                         sparse_tables=[("user", 100)], num_items=50, num_action_types=3)
        model = build_model(spec, ModelConfig(encoder="avg_pool"), ["click"])
        model.tasks  # ['click']
    """
    sequence = build_sequence_encoder(
        config.encoder, config.sequence_config(spec.num_action_types, spec.num_items)
    )
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
        return TransActDCN(
            ebc, sequence, spec.dense_in_features, DENSE_ARCH_LAYER_SIZES, OVER_ARCH_LAYER_SIZES,
            dcn_num_layers=DCN_NUM_LAYERS, dcn_low_rank_dim=config.dcn_low_rank_dim,
            user_embedding_dim=spec.user_embedding_dim, tasks=tasks,
        )
    return TransActDLRM(
        ebc, sequence, spec.dense_in_features + spec.user_embedding_dim,
        DENSE_ARCH_LAYER_SIZES + [config.embedding_dim], OVER_ARCH_LAYER_SIZES, tasks=tasks,
    )


def model_description(model: ModelConfig, spec: ModelSpec, tasks: Sequence[str], **extra: Any) -> str:
    """The ``model.json`` text: what :func:`load_trained_model` rebuilds the model from.

    Args:
        model (ModelConfig): the architecture (only its :class:`ModelConfig` fields are
            needed; ``extra`` may add the whole run's config for the record).
        spec (ModelSpec): the data's shapes.
        tasks (Sequence[str]): the heads.
        extra: more JSON fields.
    """
    description = {
        "model": model.model_fields(), "spec": dataclasses.asdict(spec), "tasks": list(tasks), **extra
    }
    return json.dumps(description, indent=1)


def vocabulary_description(
    vocabularies: Dict[str, List[str]], action_names: Sequence[str], min_id_count: int = 1
) -> str:
    """The ``vocabulary.json`` text: per categorical feature, the raw id of each table row
    from row 1 (row 0 is the out-of-vocabulary row), the action names in id order, and
    ``min_id_count`` (above 1, row 0 was trained on the rare ids)."""
    return json.dumps({"features": vocabularies, "actions": list(action_names), "min_id_count": min_id_count})


def read_model_description(text: str) -> Tuple[ModelConfig, ModelSpec, List[str]]:
    """Parses ``model.json`` (also the layout of earlier releases, whose ``config`` held
    the whole training config and ``encoder`` the encoder)."""
    info = json.loads(text)
    if "model" in info:
        fields = info["model"]
    else:
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        fields = {k: v for k, v in info["config"].items() if k in names}
        fields["encoder"] = info["encoder"]
    spec = info["spec"]
    spec["sparse_tables"] = [tuple(table) for table in spec["sparse_tables"]]
    return ModelConfig(**fields), ModelSpec(**spec), list(info["tasks"])


def _resolve_checkpoint(path: str) -> str:
    if os.path.exists(os.path.join(path, ".metadata")):
        return path
    for directory in (os.path.join(path, "checkpoints"), path):
        found = latest_checkpoint(directory) if os.path.isdir(directory) else None
        if found is not None:
            return found
    raise CheckpointError(f"{path}: no checkpoint there (no .metadata, no latest)")


def load_trained_model(path: str) -> Tuple[nn.Module, Dict[str, Any]]:
    """The unsharded model of a ``transact-train`` checkpoint, and its description.

    Args:
        path (str): a checkpoint (``.../checkpoints/step_N``), a run's ``checkpoints``
            directory or the run's output directory (the latest checkpoint of either).

    Returns:
        Tuple[nn.Module, Dict[str, Any]]: the ranking model in evaluation mode and the
        parsed ``model.json`` plus ``checkpoint`` (the path read) and, for models trained
        on a log, ``vocabulary`` (the parsed ``vocabulary.json``).

    Raises:
        CheckpointError: no checkpoint, no ``model.json``, or weights that do not fit.
    """
    path = _resolve_checkpoint(path)
    description = os.path.join(path, MODEL_JSON)
    if not os.path.exists(description):
        raise CheckpointError(
            f"{description} is missing: the checkpoint predates model descriptions; "
            "build the model yourself and use Predictor(model)"
        )
    with open(description) as f:
        text = f.read()
    try:
        config, spec, tasks = read_model_description(text)
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{description} is not a model description: {error}") from None
    # The checkpoint holds the training wrapper's state (the loss's weights included).
    wrapper = TransActTrain(build_model(spec, config, tasks))
    state = {"model": wrapper.state_dict()}
    load_checkpoint(path, state)
    wrapper.load_state_dict(state["model"])
    info: Dict[str, Any] = {**json.loads(text), "checkpoint": path}
    info.setdefault("encoder", config.encoder)
    vocabulary = os.path.join(path, VOCABULARY_JSON)
    if os.path.exists(vocabulary):
        with open(vocabulary) as f:
            info["vocabulary"] = json.load(f)
    return wrapper.model.eval(), info
