#!/usr/bin/env python3
"""The task vocabulary: Pinterest's action types, which are also the model's task heads.

A positive task (click, save) is one whose HIT@3 should rise; a negative one (hide) is
engagement nobody wants more of, so its HIT@3 should fall. Other logs name their own
tasks (MovieLens: like = ``save``, dislike = ``hide``).
"""

from typing import Tuple

CLICK, SAVE, HIDE = 0, 1, 2
PINTEREST_ACTIONS: Tuple[str, ...] = ("click", "save", "hide")
NEGATIVE_TASKS = frozenset({"hide"})


def higher_is_better(task: str) -> bool:
    """Whether a higher HIT@3 on ``task`` is better (False for negative feedback).

    Example::

        higher_is_better("save"), higher_is_better("hide")  # (True, False)
    """
    return task not in NEGATIVE_TASKS
