#!/usr/bin/env python3
"""Package exports loaded on first use (PEP 562), so that the torch-only parts import
without torchrec."""

import importlib
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple


def lazy_exports(
    package: str, where: Dict[str, str], missing: Optional[str] = None
) -> Tuple[Callable[[str], Any], Callable[[], List[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name of ``where`` from its
    module, imported when first asked for; any other name as a submodule.

    Args:
        package (str): the package's ``__name__``.
        where (Dict[str, str]): exported name -> the module that defines it.
        missing (Optional[str]): the message of the ``ImportError`` raised when an
            export's module fails to import (a missing dependency).

    Returns:
        Tuple[Callable[[str], Any], Callable[[], List[str]]]: the two module functions.
    """

    def __getattr__(name: str) -> Any:
        if name in where:
            try:
                module = importlib.import_module(where[name])
            except ImportError as error:
                if missing is None:
                    raise
                raise ImportError(missing) from error
            return getattr(module, name)
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    def __dir__() -> List[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__
