"""RLlib's default DQN module with invalid actions masked out.

The observation ends with the valid-action mask (:data:`tune_app.controller.mdp.FEATURE_DIM`
onwards, 1 valid / -1 invalid). Every Q-value this module computes, online or
target, is -inf for an invalid action. RLlib's DQN is built for that: its
epsilon-greedy exploration draws random actions only among finite Q-values, the
greedy action is the best valid one, and the double-DQN bootstrap takes its
argmax over valid next actions (the learner maps -inf to 0 only where it gathers).
So pretraining acts exactly as the searcher does, which masks the same actions.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import (
    DefaultDQNTorchRLModule,
)
from ray.rllib.core.columns import Columns

from tune_app.controller import mdp

QF_PREDS = "qf_preds"


def mask_invalid(q: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
    """``q`` with the actions that ``obs`` marks invalid set to -inf (a row with no
    valid action at all is left as it is)."""
    valid = obs[..., mdp.FEATURE_DIM :] > 0
    valid = valid | ~valid.any(dim=-1, keepdim=True)
    return torch.where(valid, q, torch.full_like(q, float("-inf")))


class MaskedDQNModule(DefaultDQNTorchRLModule):
    """Dueling double-DQN module whose Q-values are -inf for invalid actions."""

    def _qf_forward_helper(self, batch: dict[str, Any], encoder: Any, head: Any) -> Any:
        out = super()._qf_forward_helper(batch, encoder, head)
        q, obs = out[QF_PREDS], batch[Columns.OBS]
        assert isinstance(q, torch.Tensor) and isinstance(obs, torch.Tensor)
        out[QF_PREDS] = mask_invalid(q, obs)
        return out
