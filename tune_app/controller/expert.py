"""A scripted tuning policy: the demonstrator for the controller's pretraining.

It follows the recipe that works for small budgets: spend the first
``explore`` fraction of the budget on random jumps, then do coordinate descent
around the incumbent: go back to the best configuration, try its unvisited
one-box neighbours (repeating a move that just improved), and take a local jump
when every neighbour was tried. The DQN is first fitted to its demonstrations
(:mod:`tune_app.controller.demos`, DQfD-style), then RLlib's DQN trains on from
there; the searcher never uses the script directly.
"""

from __future__ import annotations

import random

import numpy as np

from tune_app.controller import mdp

# Fraction of the budget spent on random jumps, chosen on generated tasks (mean final
# log10 normalised regret over 300 of them: 0.1 -> -2.09, 0.2 -> -2.12, 0.3 -> -2.17).
EXPLORE = 0.3


def expert_action(
    walker: mdp.Walker,
    hist: mdp.History,
    horizon: int,
    rng: random.Random,
    explore: float = EXPLORE,
) -> int:
    """The scripted action for ``walker`` (always a valid one when any is)."""
    mask = mdp.valid_actions(walker, hist)
    used = len(hist.values) + len(hist.pending)
    if used < max(2, round(explore * horizon)) and mask[mdp.JUMP]:
        return mdp.JUMP
    if mask[mdp.RETURN_TO_BEST]:  # away from the incumbent: go back to it
        return mdp.RETURN_TO_BEST
    ones = [a for a in range(2 * mdp.MAX_PARAMS) if mask[a]]  # one-box moves
    if walker.moves and walker.since_improve == 0:
        i, d = walker.moves[-1]
        again = 2 * i + (1 if d > 0 else 0)
        if again in ones:
            return again
    if ones:
        return ones[rng.randrange(len(ones))]
    for a in (mdp.LOCAL_JUMP, mdp.JUMP):
        if mask[a]:
            return a
    valid = np.flatnonzero(mask)
    return int(valid[0]) if len(valid) else mdp.JUMP
