#!/usr/bin/env python3
"""Train a TransAct ranking model: ``python -m torchrec_transact.train`` / ``transact-train``.

    python -m torchrec_transact.train                              # synthetic, TransAct-DCN
    python -m torchrec_transact.train --encoder avg_pool --model dlrm --steps 500
    python -m torchrec_transact.train --data movielens --data-path ml-100k.inter
    python -m torchrec_transact.train --config run.json --output-dir runs/a
    python -m torchrec_transact.train --help                       # every flag

The flags are :class:`~torchrec_transact.config.TrainConfig`'s fields; the loop is
:func:`torchrec_transact.trainer.train`. An error prints one line on stderr and exits with
2 (bad flags, config or input) or 1 (a failure while running); ``--debug`` shows the
traceback instead.
"""

import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from torchrec_transact.checkpoint import CheckpointError
from torchrec_transact.config import ConfigError, parse_args
from torchrec_transact.trainer import open_run_data, quiet_library_noise, StepHook, train

PROG = "transact-train"


def _fail(error: BaseException, code: int, debug: bool, name_the_type: bool = False) -> NoReturn:
    if debug:
        raise error
    lines = str(error).strip().splitlines() or [""]
    message = f"{type(error).__name__}: {lines[0]} (--debug shows the traceback)" if name_the_type else lines[0]
    print(f"{PROG}: error: {message}", file=sys.stderr)  # one line
    raise SystemExit(code) from None


def _check_output_dir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--output-dir {path} is a file, not a directory")
    os.makedirs(path, exist_ok=True)  # an unwritable place fails here, before any work


def main(argv: Optional[List[str]] = None, step_hooks: Sequence[StepHook] = ()) -> Dict[str, Dict[str, Any]]:
    """Parses the flags and runs :func:`~torchrec_transact.trainer.train`.

    Args:
        argv (Optional[List[str]]): the flags (default: ``sys.argv[1:]``).
        step_hooks (Sequence[StepHook]): passed to the loop (a wrapper script can install
            its own, such as a failure drill).

    Returns:
        Dict[str, Dict[str, Any]]: each model's final metrics, by encoder name.
    """
    quiet_library_noise()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        config, debug = parse_args(argv)
        _check_output_dir(config.output_dir)
        spec = open_run_data(config)  # before any process group: bad input fails fast
    except (ValueError, OSError) as error:
        _fail(error, 2, debug)
    try:
        return train(config, step_hooks, spec)
    except CheckpointError as error:
        _fail(error, 1, debug)
    except (ValueError, OSError) as error:  # bad input found while running
        _fail(error, 2, debug)
    except Exception as error:  # a failure of the run itself
        _fail(error, 1, debug, name_the_type=True)


def cli() -> None:
    """Console-script entry point (``transact-train``)."""
    main()


if __name__ == "__main__":
    cli()
