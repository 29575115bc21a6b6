"""A failure drill for the torchx restart test: ``python -m crash_drill FLAGS`` trains as
``transact-train`` does, and the last rank dies at a given step, once.

The step and the marker file (its existence means the drill already ran) come from the
environment of the test that launches it: TRANSACT_DRILL_STEP, TRANSACT_DRILL_MARKER."""

import os
import sys

from torchrec_transact.train import main


def crash_once(step: int, rank: int, world_size: int) -> None:
    marker = os.environ["TRANSACT_DRILL_MARKER"]
    if step == int(os.environ["TRANSACT_DRILL_STEP"]) and rank == world_size - 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(17)  # a rank dies without cleanup, as a killed process would


if __name__ == "__main__":
    main(sys.argv[1:], step_hooks=[crash_once])
