#!/usr/bin/env python3
"""Sharded checkpoints: atomic, resumable, and loaded without unpickling arbitrary objects.

A checkpoint is a ``torch.distributed.checkpoint`` (DCP) directory holding the sharded
model and every optimizer's state (the fused embedding optimizers' included), plus one
small file per rank with the step (= the data position: batch ``step`` comes next) and the
rank's random-number state::

    run/checkpoints/step_00000200/   .metadata, __0_0.distcp, ..., rank0.pt, rank1.pt
    run/checkpoints/latest           "step_00000200"

Writing goes to ``step_N.tmp`` and is renamed once every rank has finished, then
``latest`` is replaced atomically: a crash mid-write leaves the previous checkpoint valid.
Loading reads tensors with ``weights_only=True``, other values and DCP's metadata through
an unpickler that accepts only plain containers and DCP's own metadata classes.
"""

import hashlib
import io
import os
import pickle
import re
import shutil
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

LATEST = "latest"
_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool", "complex", "slice"}
_SAFE_TORCH = {"Size", "device"} | {
    name for name in dir(torch) if isinstance(getattr(torch, name, None), (torch.dtype, torch.memory_format, torch.layout))
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or does not fit the model."""


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (
            module.startswith("torch.distributed.checkpoint")
            or (module == "builtins" and name in _SAFE_BUILTINS)
            or (module == "torch" and name in _SAFE_TORCH)
            or (module == "collections" and name == "OrderedDict")
            or (module == "torch.serialization" and name == "_get_layout")
            or (module == "pathlib" and name in ("PosixPath", "PurePosixPath", "WindowsPath", "PureWindowsPath"))
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"checkpoint metadata refers to {module}.{name}: refused")


class _SafeReader(FileSystemReader):
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        path = self._get_metadata_path(kwargs.get("rank"))
        with self.fs.create_stream(path, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class _SafePlanner(DefaultLoadPlanner):
    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


_EXCEPTION_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.*)$")


def _root_cause(error: BaseException) -> str:
    """One line for an error: DCP wraps each rank's exception, traceback and all, into its
    message; the first ``SomeError: message`` line of it is the cause."""
    text = str(error)
    for line in text.splitlines()[1:] if isinstance(error, CheckpointException) else []:
        match = _EXCEPTION_LINE.match(line)
        if match:
            return f"{match.group(1)}: {match.group(2).split('. ')[0]}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_checkpoint(
    directory: str,
    step: int,
    state: Dict[str, Any],
    rank_state: Dict[str, Any],
    files: Optional[Dict[str, str]] = None,
) -> str:
    """Writes ``state`` (model and optimizer state dicts, sharded) and this rank's
    ``rank_state`` (plain values and tensors) as ``directory/step_N``, atomically;
    rank 0 adds ``files`` (name -> text), such as the model description.

    Returns:
        str: the checkpoint path.
    """
    name = f"step_{step:08d}"
    final, temporary = os.path.join(directory, name), os.path.join(directory, name + ".tmp")
    if _rank() == 0:
        os.makedirs(directory, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    _barrier()
    dcp.save(state, checkpoint_id=temporary)
    torch.save({"step": step, **rank_state}, os.path.join(temporary, f"rank{_rank()}.pt"))
    if _rank() == 0:
        for file_name, text in (files or {}).items():
            with open(os.path.join(temporary, file_name), "w") as f:
                f.write(text)
    _barrier()
    if _rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        pointer = os.path.join(directory, LATEST + ".tmp")
        with open(pointer, "w") as f:
            f.write(name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(pointer, os.path.join(directory, LATEST))
    _barrier()
    return final


def latest_checkpoint(directory: str) -> Optional[str]:
    """The path ``directory/latest`` points to, or None when there is no checkpoint."""
    pointer = os.path.join(directory, LATEST)
    if not os.path.exists(pointer):
        return None
    with open(pointer) as f:
        path = os.path.join(directory, f.read().strip())
    if not os.path.isdir(path):
        raise CheckpointError(f"{pointer} names {path}, which does not exist")
    return path


def load_checkpoint(path: str, state: Dict[str, Any]) -> Dict[str, Any]:
    """Fills ``state`` (the current model/optimizer state dicts, in place) from ``path``
    and returns this rank's saved values (``step`` and whatever else was saved).

    Raises:
        CheckpointError: missing, corrupt or mismatched checkpoints, with the path.
    """
    if not os.path.exists(os.path.join(path, ".metadata")):
        raise CheckpointError(f"{path} is not a complete checkpoint (no .metadata)")
    try:
        dcp.load(state, storage_reader=_SafeReader(path), planner=_SafePlanner())
    except (Exception, CheckpointException) as error:  # the latter is a BaseException
        raise CheckpointError(f"cannot load {path} into this model: {_root_cause(error)}") from error
    rank_file = os.path.join(path, f"rank{_rank()}.pt")
    if not os.path.exists(rank_file):
        raise CheckpointError(
            f"{rank_file} is missing: the checkpoint was written by fewer ranks"
        )
    try:
        return torch.load(rank_file, weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{rank_file} is corrupt: {error}") from error


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every rank's local model state (its shards and the dense weights), to
    compare two runs bit for bit; a collective when a process group exists."""
    local = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensors = [s.tensor for s in value.local_shards()] if hasattr(value, "local_shards") else [value]
        for tensor in tensors:
            local.update(key.encode())
            values = tensor.detach().cpu()
            if values.dtype == torch.bfloat16:  # numpy has no bfloat16
                values = values.view(torch.int16)
            local.update(values.numpy().tobytes())  # C order, whatever the strides
    if not dist.is_initialized():
        return hashlib.sha256(local.hexdigest().encode()).hexdigest()
    digests: List[Optional[str]] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, local.hexdigest())
    return hashlib.sha256("".join(str(d) for d in digests).encode()).hexdigest()
