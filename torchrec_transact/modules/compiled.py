#!/usr/bin/env python3
"""A function run through ``torch.compile``, with the eager function as the fallback."""

import warnings
from typing import Any, Callable, Optional

import torch


class CompiledOrEager:
    """``torch.compile(fn)`` that falls back to ``fn`` for good, with one warning, when
    compilation fails (no C++ compiler, an unsupported backend or op), and runs ``fn``
    itself while something else is tracing (torch.export, an enclosing compile).

    ``fn`` should take its module as an argument rather than be a bound method: a copy of
    the module (deepcopy) then shares the compiled function but runs its own weights.

    Args:
        fn (Callable[..., Any]): the eager function.
        what (str): named in the warning.
        **compile_kwargs: for ``torch.compile`` (e.g. ``dynamic=True``).

    Example::

        double = CompiledOrEager(lambda x: 2 * x, "doubling", dynamic=True)
        double(torch.ones(3))  # tensor([2., 2., 2.])
    """

    def __init__(self, fn: Callable[..., Any], what: str, **compile_kwargs: Any) -> None:
        self.fn = fn
        self.what = what
        self.compiled: Optional[Callable[..., Any]] = torch.compile(fn, **compile_kwargs)

    @property
    def failed(self) -> bool:
        """True once a compilation failed (every call since ran eager)."""
        return self.compiled is None

    def __call__(self, *args: Any) -> Any:
        if self.compiled is None or torch.compiler.is_compiling():
            return self.fn(*args)
        try:
            return self.compiled(*args)
        except Exception as error:  # noqa: BLE001 - any compiler failure: eager from now on
            message = str(error).splitlines()[0] if str(error) else ""
            warnings.warn(f"torch.compile of {self.what} failed ({type(error).__name__}: {message}); "
                          "using the eager path")
            self.compiled = None
            return self.fn(*args)
