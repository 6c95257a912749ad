"""Demonstrations and the DQfD warm start of the controller's Q-network.

Plain DQN from scratch, in the pretraining time this machine allows (18 min,
93k env steps), learnt a policy barely better than random search on held-out
generated tasks (mean final log10 regret -1.90 against -1.78) and far behind a
simple scripted tuner (-2.17). Following *Deep
Q-learning from Demonstrations* (Hester et al., 2018), pretraining now starts
from demonstrations of :mod:`tune_app.controller.expert` on generated tasks:

1. :func:`demonstrations` plays episodes of :class:`~tune_app.controller.env.TuningEnv`
   with the scripted expert (a fraction ``noise`` of the steps take a random
   valid action instead, for coverage) and records every transition, the
   n-step return and the expert's action in each state.
2. :func:`warm_start` fits a Q-network of exactly the RLlib DQN module's shape
   (encoder MLP, dueling heads) to them with DQfD's loss: the n-step double-DQN
   TD error against a target network plus the large-margin loss
   ``max_a [Q(s, a) + margin * (a != a_E)] - Q(s, a_E)`` that ranks the expert's
   action first.
3. RLlib DQN (:func:`tune_app.controller.pretrain.train_local`) continues from
   that network on its own experience (``--init-from``), so the shipped policy
   is the one RLlib's DQN learner produced.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tune_app.controller import mdp
from tune_app.controller.env import TuningEnv
from tune_app.controller.expert import EXPLORE, expert_action
from tune_app.controller.module import mask_invalid
from tune_app.controller.policy import WEIGHTS_FILE


@dataclass
class Demos:
    """Transitions with n-step targets: ``obs[i]`` --``action[i]``--> ``ret[i]`` then
    ``boot_obs[i]`` discounted by ``boot_discount[i]`` (0 when the episode ended)."""

    obs: np.ndarray
    action: np.ndarray
    expert: np.ndarray
    ret: np.ndarray
    boot_obs: np.ndarray
    boot_discount: np.ndarray
    episode_regret: np.ndarray  # final log regret of each episode

    def __len__(self) -> int:
        return len(self.action)


def demonstrations(
    episodes: int,
    seed: int = 0,
    noise: float = 0.1,
    n_step: int = 3,
    gamma: float = 0.95,
    explore: float = EXPLORE,
    budget_min: int = 10,
    budget_max: int = 60,
) -> Demos:
    """Play ``episodes`` expert episodes (with ``noise`` random valid actions)."""
    env = TuningEnv({"seed": seed, "budget_min": budget_min, "budget_max": budget_max})
    rng = random.Random(seed)
    cols: dict[str, list] = {k: [] for k in ("obs", "action", "expert", "ret", "boot", "disc")}
    regrets = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 1_000_003 + ep)
        ep_obs, ep_act, ep_exp, ep_rew = [obs], [], [], []
        done = False
        while not done:
            a_e = expert_action(env.walker, env.hist, env.budget, rng, explore)
            a = a_e
            if rng.random() < noise:
                valid = np.flatnonzero(mdp.valid_actions(env.walker, env.hist))
                a = int(valid[rng.randrange(len(valid))]) if len(valid) else a_e
            obs, r, term, trunc, _ = env.step(a)
            ep_act.append(a)
            ep_exp.append(a_e)
            ep_rew.append(r)
            ep_obs.append(obs)
            done = term or trunc
        regrets.append(env.score)
        T = len(ep_act)
        for t in range(T):
            k = min(n_step, T - t)
            cols["ret"].append(sum(gamma**j * ep_rew[t + j] for j in range(k)))
            ended = t + k >= T and term
            cols["boot"].append(ep_obs[t + k])
            cols["disc"].append(0.0 if ended else gamma**k)
        cols["obs"].extend(ep_obs[:-1])
        cols["action"].extend(ep_act)
        cols["expert"].extend(ep_exp)
    return Demos(
        obs=np.asarray(cols["obs"], dtype=np.float32),
        action=np.asarray(cols["action"], dtype=np.int64),
        expert=np.asarray(cols["expert"], dtype=np.int64),
        ret=np.asarray(cols["ret"], dtype=np.float32),
        boot_obs=np.asarray(cols["boot"], dtype=np.float32),
        boot_discount=np.asarray(cols["disc"], dtype=np.float32),
        episode_regret=np.asarray(regrets, dtype=np.float32),
    )


class _Seq(nn.Module):
    """``net.mlp`` nesting, so parameter names match RLlib's DQN module."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.net = nn.ModuleDict({"mlp": nn.Sequential(*layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net["mlp"](x)
        return out


class QNet(nn.Module):
    """The RLlib default DQN module's Q-network (dueling), with its tensor names."""

    def __init__(self, hidden: tuple[int, ...] = (128, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = mdp.OBS_DIM
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.encoder = _Seq(layers)
        self.af = _Seq([nn.Linear(width, mdp.N_ACTIONS)])
        self.vf = _Seq([nn.Linear(width, 1)])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        h = self.encoder(obs)
        a = self.af(h)
        return a - a.mean(dim=-1, keepdim=True) + self.vf(h)


def warm_start(
    demos: Demos,
    out: Path,
    hidden: tuple[int, ...] = (128, 128),
    updates: int = 20_000,
    batch_size: int = 256,
    lr: float = 1e-3,
    margin: float = 0.1,
    margin_weight: float = 1.0,
    target_update: int = 1000,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, float]:
    """Fit a Q-network to ``demos`` with DQfD's loss; save it to ``out`` (tensors only)."""
    torch.manual_seed(seed)
    net, target = QNet(hidden), QNet(hidden)
    target.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-5)
    t = {
        "obs": torch.as_tensor(demos.obs),
        "action": torch.as_tensor(demos.action),
        "expert": torch.as_tensor(demos.expert),
        "ret": torch.as_tensor(demos.ret),
        "boot": torch.as_tensor(demos.boot_obs),
        "disc": torch.as_tensor(demos.boot_discount),
    }
    gen = torch.Generator().manual_seed(seed)
    start = time.time()
    td_sum = m_sum = agree = 0.0
    stats: dict[str, float] = {}
    for step in range(1, updates + 1):
        idx = torch.randint(len(demos), (batch_size,), generator=gen)
        obs, act, exp_a = t["obs"][idx], t["action"][idx], t["expert"][idx]
        q = mask_invalid(net(obs), obs)  # as RLlib's module computes it
        with torch.no_grad():
            boot = t["boot"][idx]
            best_next = mask_invalid(net(boot), boot).argmax(dim=1, keepdim=True)  # double Q
            q_next = target(boot).gather(1, best_next).squeeze(1)
            y = t["ret"][idx] + t["disc"][idx] * q_next
        td = nn.functional.smooth_l1_loss(q.gather(1, act[:, None]).squeeze(1), y)
        bonus = torch.full_like(q, margin).scatter(1, exp_a[:, None], 0.0)
        q_e = q.gather(1, exp_a[:, None]).squeeze(1)
        large_margin = ((q + bonus).max(dim=1).values - q_e).mean()  # max over valid actions
        loss = td + margin_weight * large_margin
        opt.zero_grad()
        loss.backward()
        opt.step()
        td_sum += float(td.detach())
        m_sum += float(large_margin.detach())
        agree += float((q.argmax(dim=1) == exp_a).float().mean())
        if step % target_update == 0:
            target.load_state_dict(net.state_dict())
        if step % 2000 == 0 or step == updates:
            n = 2000 if step % 2000 == 0 else step % 2000
            stats = {
                "td_loss": td_sum / n,
                "margin_loss": m_sum / n,
                "expert_agreement": agree / n,
            }
            log(
                f"warm start {step:6d}/{updates}  td {stats['td_loss']:.4f}  "
                f"margin {stats['margin_loss']:.4f}  agrees with expert "
                f"{stats['expert_agreement']:.2f}  {time.time() - start:5.0f}s"
            )
            td_sum = m_sum = agree = 0.0
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().clone() for k, v in net.state_dict().items()}, out / WEIGHTS_FILE)
    return {**stats, "updates": float(updates), "wall_time_s": round(time.time() - start, 1)}
