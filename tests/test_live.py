"""A restored searcher reaches the live driver: its tags and artifacts are used."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ray.tune.search import Searcher

from tune_app.run import live
from tune_app.run.resume import ResumableSearcher


class Tagging(Searcher):
    """Suggests one fixed config and tags every trial with its own id."""

    def __init__(self) -> None:
        super().__init__(metric="m", mode="max")

    def suggest(self, trial_id: str) -> dict[str, Any]:
        return {"x": 1}

    def trial_tags(self, trial_id: str) -> dict[str, str]:
        return {"seen": trial_id}

    def write_artifacts(self, run_dir: Path) -> list[str]:
        return []


def test_the_searcher_tune_restored_tags_trials_of_the_new_driver() -> None:
    original = ResumableSearcher(Tagging(), ledger=None, key="run-1")
    restored = pickle.loads(pickle.dumps(original))  # what Tuner.restore hands back
    recorder = SimpleNamespace(tagger=None, state=SimpleNamespace(orphans=[], replays=[]))
    live.register("run-1", live.Live(recorder=recorder))  # type: ignore[arg-type]
    try:
        assert restored.suggest("t1") == {"x": 1}
        assert live.lookup("run-1").searcher is restored.searcher
        assert recorder.tagger is restored.searcher
        assert recorder.tagger.trial_tags("t1") == {"seen": "t1"}
    finally:
        live.release("run-1")
