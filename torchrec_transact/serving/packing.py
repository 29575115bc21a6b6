#!/usr/bin/env python3
"""One host-to-device copy per request: a request's tensors packed into one byte buffer
(pinned on CUDA), copied once, and viewed back as tensors on the device."""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

_ALIGN = 64

Layout = List[Tuple[torch.dtype, torch.Size, int]]


def pack(tensors: Sequence[torch.Tensor], pin_memory: bool = False) -> Tuple[torch.Tensor, Layout]:
    """Copies tensors into one contiguous byte buffer (64-byte aligned slots).

    Returns:
        Tuple[torch.Tensor, List[Tuple[torch.dtype, torch.Size, int]]]: the uint8 buffer
        and each tensor's (dtype, shape, byte offset), for :func:`unpack`.

    Example::

        buffer, layout = pack([torch.arange(3), torch.ones(2, 2)])
        unpack(buffer, layout)[1]  # tensor([[1., 1.], [1., 1.]])
    """
    layout: Layout = []
    offset = 0
    for t in tensors:
        layout.append((t.dtype, t.shape, offset))
        offset += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    buffer = torch.empty(max(offset, _ALIGN), dtype=torch.uint8, pin_memory=pin_memory)
    for t, view in zip(tensors, unpack(buffer, layout)):
        view.copy_(t)
    return buffer, layout


def unpack(buffer: torch.Tensor, layout: Sequence[Tuple[torch.dtype, torch.Size, int]]) -> List[torch.Tensor]:
    """Views of ``buffer`` (on any device) laid out by :func:`pack`."""
    views = []
    for dtype, shape, offset in layout:
        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
        views.append(buffer[offset : offset + nbytes].view(dtype).view(shape))
    return views


def to_device(inputs: Sequence[Optional[torch.Tensor]], device: torch.device) -> List[Optional[torch.Tensor]]:
    """``inputs`` on ``device`` in one host-to-device copy (None stays None).

    Args:
        inputs (Sequence[Optional[torch.Tensor]]): host tensors.
        device (torch.device): where they go; the host buffer is pinned for CUDA.

    Returns:
        List[Optional[torch.Tensor]]: views of one device buffer, in ``inputs`` order.
    """
    present = [t for t in inputs if t is not None]
    buffer, layout = pack(present, pin_memory=device.type == "cuda")
    on_device = iter(unpack(buffer.to(device, non_blocking=True), layout))
    return [None if t is None else next(on_device) for t in inputs]
