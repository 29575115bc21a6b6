"""Every ``Example::`` block in the package's docstrings runs."""

import importlib
import os
import inspect
import pkgutil
import textwrap
from typing import Iterator, List, Tuple

import pytest
import torch
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

import torchrec_transact
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec_transact import TransAct, TransActConfig
from torchrec_transact.data import TransActBatch
from torchrec_transact.models import TransActDCN
from torchrec_transact.modules.baselines import NoSequence


def _examples() -> Iterator[Tuple[str, str]]:
    for info in pkgutil.walk_packages(torchrec_transact.__path__, "torchrec_transact."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != info.name or not obj.__doc__:
                continue
            doc = inspect.getdoc(obj) or ""
            if "Example::" in doc:
                block = doc.split("Example::", 1)[1]
                lines: List[str] = []
                for line in block.splitlines()[1:]:
                    if line and not line.startswith(" "):
                        break
                    lines.append(line)
                yield f"{info.name}.{name}", textwrap.dedent("\n".join(lines))


EXAMPLES = dict(_examples())


def test_examples_were_found() -> None:
    assert "torchrec_transact.modules.transact.TransAct" in EXAMPLES
    assert len(EXAMPLES) >= 8


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_docstring_example_runs(name: str) -> None:
    if "TRANSACT_DATA_DIR" in EXAMPLES[name] and not os.environ.get("TRANSACT_DATA_DIR"):
        pytest.skip("the example reads the shared data; TRANSACT_DATA_DIR is not set")
    module = importlib.import_module(name.rsplit(".", 1)[0])
    namespace = dict(vars(module))
    namespace.update(
        torch=torch,
        KeyedJaggedTensor=KeyedJaggedTensor,
        JaggedTensor=JaggedTensor,
        EmbeddingBagCollection=EmbeddingBagCollection,
        EmbeddingBagConfig=EmbeddingBagConfig,
        TransAct=TransAct,
        TransActConfig=TransActConfig,
        NoSequence=NoSequence,
        TransActBatch=TransActBatch,
        TransActDCN=TransActDCN,
    )
    exec(compile(EXAMPLES[name], name, "exec"), namespace)
