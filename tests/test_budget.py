"""The epoch ledger: budget, idempotent grants, settlement and lockstep."""

from __future__ import annotations

from ray.tune.schedulers import TrialScheduler

from tune_app.run.budget import GRANTED, REFUSED, WAIT, EpochLedger


def test_grants_until_budget_then_refuses() -> None:
    ledger = EpochLedger(3)
    assert [ledger.acquire("a", e) for e in (1, 2, 3)] == [GRANTED] * 3
    assert ledger.acquire("b", 1) == REFUSED
    assert ledger.spent() == 3


def test_retried_epoch_is_not_charged_twice() -> None:
    ledger = EpochLedger(2)
    assert ledger.acquire("a", 1) == GRANTED
    assert ledger.acquire("a", 1) == GRANTED
    assert ledger.spent() == 1


def test_settle_returns_unreported_grants() -> None:
    ledger = EpochLedger(4)
    for e in (1, 2, 3):
        ledger.acquire("a", e)
    assert ledger.state() == (1, True)
    ledger.settle("a", reported_epochs=1)  # stopped after reporting epoch 1
    assert ledger.spent() == 1
    assert ledger.state() == (3, False)


def test_lockstep_waits_for_the_scheduler() -> None:
    ledger = EpochLedger(10, lockstep=True)
    ledger.restart("a", 0)
    assert ledger.acquire("a", 1) == GRANTED
    assert ledger.acquire("a", 2) == WAIT  # epoch 1 not judged yet
    ledger.decide("a", 1, TrialScheduler.CONTINUE)
    assert ledger.acquire("a", 2) == GRANTED
    ledger.decide("a", 2, TrialScheduler.PAUSE)
    assert ledger.acquire("a", 3) == WAIT
    ledger.restart("a", 2)  # resumed from its epoch-2 checkpoint
    assert ledger.acquire("a", 3) == GRANTED
    ledger.decide("a", 3, TrialScheduler.STOP)
    assert ledger.acquire("a", 4) == REFUSED


def test_a_trial_continuing_an_orphan_starts_where_the_journal_stopped() -> None:
    ledger = EpochLedger(10, lockstep=True)
    # The dead driver recorded 2 epochs of "orphan" and ran "done" to its end.
    ledger.seed({"orphan": 2, "done": 3}, ["done"], finals={"done": {"m": 0.9, "epoch": 3}})
    ledger.alias("new", "orphan")
    assert ledger.start("new") == (["orphan", "new"], 2, None)
    assert ledger.start("done") == (["done"], 3, {"m": 0.9, "epoch": 3})
    ledger.restart("new", 0)  # Tune knows nothing of the orphan's reports ...
    assert ledger.acquire("new", 3) == GRANTED  # ... it trains epoch 3, not wait forever
    assert ledger.spent() == 3 + 3
