#!/usr/bin/env python3
"""torchx component for the training job.

This machine, 2 processes::

    torchx run -s local_cwd torchrec_transact/components.py:train --nproc_per_node 2 -- --steps 300

A cluster (the same component; pick the scheduler, image and sizes)::

    torchx run -s kubernetes torchrec_transact/components.py:train \\
        --image my-registry/transact:latest --nnodes 4 --gpus 8 -- --batch-size 4096
    torchx run -s slurm torchrec_transact/components.py:train --nnodes 2 --gpus 8 -- ...

Everything after ``--`` goes to ``python -m torchrec_transact.train`` (or to the module
named by ``--module``: a script of yours that calls ``torchrec_transact.train.main`` with
step hooks). With
``--max_restarts N`` torchrun restarts all ranks when one dies and the job resumes from its
last checkpoint (``--resume`` is passed for you; set ``--checkpoint-interval``).
"""

from typing import Dict, Optional

import torchx.specs as specs
from torchx.components.dist import ddp


def train(
    *script_args: str,
    nproc_per_node: int = 0,
    nnodes: int = 1,
    gpus: int = 0,
    cpus: int = 2,
    memMB: int = 16384,
    image: str = "ghcr.io/pytorch/torchx:0.7.0",
    name: str = "transact-train",
    max_restarts: int = 0,
    env: Optional[Dict[str, str]] = None,
    module: str = "torchrec_transact.train",
) -> specs.AppDef:
    """Distributed TransAct training, one torchrun per node (torchx ``dist.ddp``).

    Args:
        script_args: flags of ``python -m torchrec_transact.train``.
        nproc_per_node: processes per node; 0: one per GPU, or 2 without GPUs.
        nnodes: number of nodes.
        gpus: GPUs per node (0: CPU training with gloo).
        cpus: CPUs per node.
        memMB: memory per node, in MB.
        image: container image (ignored by ``local_cwd``).
        name: job name.
        max_restarts: torchrun restarts the whole job this many times when a rank fails;
            the restarted job resumes from the last checkpoint.
        env: extra environment variables.
        module: the Python module each process runs with ``-m``.

    Returns:
        specs.AppDef: the job.
    """
    nproc = nproc_per_node or (gpus if gpus > 0 else 2)
    if gpus and nproc > gpus:
        raise ValueError(f"nproc_per_node={nproc} exceeds gpus={gpus}: one process per GPU")
    args = list(script_args)
    if max_restarts > 0 and "--resume" not in args:
        args.append("--resume")
    app = ddp(
        *args,
        m=module,
        image=image,
        name=name,
        cpu=cpus,
        gpu=gpus,
        memMB=memMB,
        j=f"{nnodes}x{nproc}",
        env=env,
    )
    if max_restarts > 0:
        role = app.roles[0]
        command = role.args[-1]
        role.args[-1] = command.replace("torchrun ", f"torchrun --max-restarts {max_restarts} ", 1)
    return app
