#!/usr/bin/env python3
"""The process group of a training run: one code path for one process and for many."""

import os
import socket
from typing import Tuple

import torch
import torch.distributed as dist


def init_distributed(device: str = "auto") -> Tuple[int, int, torch.device]:
    """Joins (or, run alone, creates) the process group: NCCL on CUDA, gloo on CPU.

    Under torchrun (torchx) it uses torchrun's store, each restart attempt under its own
    key prefix; under another launcher the ``env://`` variables; alone, a group of one on
    a free local port, without touching the environment.

    Args:
        device (str): "auto" (CUDA when available), "cpu" or "cuda".

    Returns:
        Tuple[int, int, torch.device]: rank, world size and this rank's device.
    """
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
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
        placed = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(placed)
    else:
        placed = torch.device("cpu")
    return dist.get_rank(), dist.get_world_size(), placed
