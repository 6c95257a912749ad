"""The seed's experience replay for Q-gradient descent: mini-batches drawn from the
A most recent and the B best episodes, as an RLlib episode replay buffer.

Seed 001, section 4.1: "The subset sample is formed by randomly drawn experience
from the A most recent episodes and top B best episodes" (A = 1,000 experiences
there, that is 10 episodes of 100 steps; B is not given). RLlib's
:class:`~ray.rllib.utils.replay_buffers.episode_replay_buffer.EpisodeReplayBuffer`
stores every episode up to its capacity and samples time steps uniformly; this
subclass samples only from the ``recent`` newest episodes (an unfinished one
among them) and the ``best`` finished ones by return among the rest. The
candidates are recomputed only when episodes are added.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.utils.replay_buffers.episode_replay_buffer import EpisodeReplayBuffer


class RecentBestEpisodeReplayBuffer(EpisodeReplayBuffer):
    """Samples from the ``recent`` newest and the ``best`` best finished episodes."""

    def __init__(self, capacity: int = 10000, *, recent: int = 10, best: int = 10, **kw: Any):
        super().__init__(capacity, **kw)
        if recent < 1 or best < 0:
            raise ValueError(f"recent must be >= 1 and best >= 0, got {recent}, {best}")
        self.recent, self.best = recent, best
        self._kept: list[tuple[int, int]] | None = None

    # RLlib's own base class and EpisodeReplayBuffer disagree on this signature
    def add(self, episodes: Any) -> None:  # type: ignore[override]
        """Store as RLlib does; the sampling candidates change."""
        super().add(episodes)
        self._kept = None

    def kept_episodes(self) -> list[int]:
        """Positions in ``self.episodes`` that :meth:`sample` draws from."""
        n = len(self.episodes)
        recent = set(range(max(0, n - self.recent), n))
        done = [
            (float(sum(e.rewards)), i)
            for i, e in enumerate(self.episodes)
            if i not in recent and e.is_done
        ]
        best = {i for _, i in sorted(done, reverse=True)[: self.best]}
        return sorted(recent | best)

    def sample(self, *args: Any, **kwargs: Any) -> Any:
        """RLlib's sampling, restricted to :meth:`kept_episodes`' time steps."""
        if self._kept is None:
            keep = {i + self._num_episodes_evicted for i in self.kept_episodes()}
            self._kept = [t for t in self._indices if t[0] in keep]
        everything = self._indices
        self._indices = self._kept
        try:
            return super().sample(*args, **kwargs)
        finally:
            self._indices = everything
