"""The epoch ledger actor (see :mod:`tune_app.run.budget`).

Kept free of Ray Tune, torch and the rest of the package: its Ray worker process
starts in well under a second, and the first trial waits for it.
"""

from __future__ import annotations

# Ray Tune's scheduler decisions (TrialScheduler.CONTINUE, .PAUSE, .STOP, .NOOP:
# the scheduler already acted on the trial itself, e.g. PBT paused it to exploit).
CONTINUE, PAUSE, STOP, NOOP = "CONTINUE", "PAUSE", "STOP", "NOOP"
GRANTED, REFUSED, WAIT = "granted", "refused", "wait"


class EpochLedger:
    """Grants epochs until ``budget`` are held; settled trials return unused grants."""

    def __init__(self, budget: int, lockstep: bool = False) -> None:
        self.budget = budget
        self.lockstep = lockstep
        self.granted: dict[str, set[int]] = {}
        self.open: set[str] = set()
        self.decisions: dict[str, tuple[int, str]] = {}
        self.aliases: dict[str, str] = {}
        self.floor: dict[str, int] = {}
        self.closed: set[str] = set()
        self.finals: dict[str, dict[str, float]] = {}

    def seed(
        self,
        recorded: dict[str, int],
        ended: list[str],
        aliases: dict[str, str] | None = None,
        finals: dict[str, dict[str, float]] | None = None,
    ) -> None:
        """Resume: epochs ``1..recorded[t]`` of every journaled trial are spent;
        ``ended`` trials get no more epochs (Tune may restart them from an
        older snapshot: they report their recorded ``finals`` result instead);
        ``aliases`` (Tune id -> first id) of continued trials keep charging their
        first id."""
        self.aliases.update(aliases or {})
        self.finals.update(finals or {})
        for tid, epochs in recorded.items():
            self.granted[tid] = set(range(1, epochs + 1))
            self.floor[tid] = epochs
        self.closed.update(ended)

    def alias(self, new_id: str, old_id: str) -> None:
        """Charge everything of ``new_id`` to ``old_id`` from now on."""
        self.aliases[new_id] = old_id
        moved = self.granted.pop(new_id, set())
        self.granted.setdefault(old_id, set()).update(moved)
        if new_id in self.open:
            self.open.discard(new_id)
            self.open.add(old_id)

    def start(self, trial_id: str) -> tuple[list[str], int, dict[str, float] | None]:
        """What a (re)starting trial needs after a resume: its lineage (the trial it
        continues, see :meth:`alias`, else itself; then every id charged to it),
        the epochs recorded for it before the crash, and, if it already ended, its
        recorded final result (it reports that instead of training again)."""
        first = self.aliases.get(trial_id, trial_id)
        lineage = [first, *sorted(t for t, o in self.aliases.items() if o == first)]
        return lineage, self.floor.get(first, 0), self.finals.get(first)

    def reserve(self, trial_id: str, epoch: int) -> bool:
        """Hold ``epoch`` for a resumed trial (what the crashed driver had granted)."""
        trial_id = self.aliases.get(trial_id, trial_id)
        held = self.granted.setdefault(trial_id, set())
        if epoch not in held and self.spent() >= self.budget:
            return False
        held.add(epoch)
        self.open.add(trial_id)
        return True

    def acquire(self, trial_id: str, epoch: int) -> str:
        """GRANTED, REFUSED or WAIT for ``epoch`` of ``trial_id`` (idempotent)."""
        trial_id = self.aliases.get(trial_id, trial_id)
        held = self.granted.setdefault(trial_id, set())
        if epoch in held:
            return GRANTED
        if trial_id in self.closed:
            return REFUSED
        if self.lockstep and epoch > 1:
            seen, decision = self.decisions.get(trial_id, (0, CONTINUE))
            if seen < epoch - 1 or decision in (PAUSE, NOOP):
                return WAIT
            if decision == STOP:
                return REFUSED
        if self.spent() >= self.budget:
            return REFUSED
        held.add(epoch)
        self.open.add(trial_id)
        return GRANTED

    def decide(self, trial_id: str, epoch: int, decision: str) -> None:
        """Record the scheduler's decision after ``epoch`` of ``trial_id``."""
        trial_id = self.aliases.get(trial_id, trial_id)
        self.decisions[trial_id] = (epoch, decision)

    def restart(self, trial_id: str, reported_epochs: int) -> None:
        """A (re)started trial may train the epoch after its last reported one (or
        after the last one recorded before a crash: a trial continuing an orphan
        starts from its checkpoint, not from epoch 1)."""
        trial_id = self.aliases.get(trial_id, trial_id)
        seen = max(reported_epochs, self.floor.get(trial_id, 0))
        self.decisions[trial_id] = (seen, CONTINUE)

    def settle(self, trial_id: str, reported_epochs: int) -> None:
        """A trial ended after reporting ``reported_epochs``: release later grants."""
        trial_id = self.aliases.get(trial_id, trial_id)
        keep = max(reported_epochs, self.floor.get(trial_id, 0))
        held = self.granted.get(trial_id, set())
        self.granted[trial_id] = {e for e in held if e <= keep}
        self.open.discard(trial_id)

    def spent(self) -> int:
        """Epochs granted and not released."""
        return sum(len(v) for v in self.granted.values())

    def state(self) -> tuple[int, bool]:
        """``(free epochs, whether any running trial still holds grants)``."""
        return self.budget - self.spent(), bool(self.open)
