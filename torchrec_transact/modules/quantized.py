#!/usr/bin/env python3
"""Row-wise int8 item vectors (TransAct V2 stores its sequences' item vectors this way).

Each row ``x`` of the table becomes 8-bit codes ``q`` and a float16 scale and offset, so
that ``x ~ q * scale + offset``: ``offset = min(x)``, ``scale = (max(x) - min(x)) / 255``,
``q = round((x - offset) / scale)``. A row of 32 floats takes 32 + 4 bytes instead of 128
(3.6x smaller, and half of float16). This is the layout of FBGEMM's row-wise int8 tables
(torchrec's quantised embedding modules), written on plain tensors so that the request
scorer keeps taking plain tensors (``torch.export``, CUDA graphs, a bare PyTorch).
"""

import torch
from torch import nn


class Int8RowwiseTable(nn.Module):
    """A frozen embedding table stored as row-wise affine int8.

    Args:
        weight (torch.Tensor): float [num_rows, dim], the table to quantise (values within
            float16's range).

    Example::

        table = Int8RowwiseTable(torch.randn(100, 32))
        table(torch.tensor([3, 7])).shape  # torch.Size([2, 32])
        table.nbytes                       # 3,600 (against 12,800 in float32)
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        weight = weight.detach().float()
        low = weight.min(dim=1).values
        high = weight.max(dim=1).values
        # float16 offset and scale, as stored, chosen so that the stored values still
        # cover the row: the offset rounded down to at most the minimum, the scale rounded
        # up; a constant row gets scale 1 (every code 0). The codes are computed against
        # the stored values, so each element is within half a step of its original.
        offset = low.half()
        offset = torch.where(offset.float() > low, torch.nextafter(offset, offset.new_tensor(float("-inf"))), offset)
        span = high - offset.float()
        scale = torch.where(span > 0, span / 255.0, torch.ones_like(span)).half()
        scale = torch.where(scale.float() * 255.0 < span, torch.nextafter(scale, scale.new_tensor(float("inf"))), scale)
        codes = torch.round((weight - offset.float()[:, None]) / scale.float()[:, None]).clamp_(0, 255)
        self.register_buffer("codes", codes.to(torch.uint8))
        self.register_buffer("scale", scale)
        self.register_buffer("offset", offset)

    @property
    def nbytes(self) -> int:
        """Bytes held: codes, scales and offsets."""
        return sum(t.numel() * t.element_size() for t in (self.codes, self.scale, self.offset))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """
        Args:
            ids (torch.Tensor): int64 row ids, any shape.

        Returns:
            torch.Tensor: float32 [*ids.shape, dim], the dequantised rows.
        """
        return self.codes[ids].float() * self.scale[ids, None].float() + self.offset[ids, None].float()

    def dequantize(self) -> torch.Tensor:
        """The whole table back in float32, [num_rows, dim]."""
        return self.codes.float() * self.scale[:, None].float() + self.offset[:, None].float()
