"""The in-training controller (--inner-controller): anchor dynamics on a tiny model,
its checkpoint, DDP agreement, the option's errors, and a search tracked in MLflow."""

from __future__ import annotations

import importlib.util
import io
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tests.controller.inner_ddp import batches, ddp_rank, tiny, weights
from tests.controller.inner_policies import Scripted, improved_policy, random_policy
from tests.tasks.test_loop import Recorder
from tests.user_tasks import Blobs
from tune_app.controller.inner import InnerController, InnerSpec, resolve
from tune_app.controller.inner_record import REPORT_KEY, clean
from tune_app.errors import ConfigError, TaskError
from tune_app.run.request import SearchRequest
from tune_app.tasks.loop import STATE_FILE, TrialSpec, train


def _benchmark(name: str) -> Any:
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not a package)."""
    path = Path(__file__).parents[2] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(model: nn.Module, opt: Any, ctl: InnerController, data: Iterator, steps: int) -> float:
    loss = torch.zeros(())
    for _ in range(steps):
        x, y = next(data)
        opt.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        ctl.after_step(loss)
    return float(loss.detach())


def momenta(opt: Any) -> list[torch.Tensor]:
    return [opt.state[p]["momentum_buffer"].clone() for p in opt.param_groups[0]["params"]]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def column(ctl: InnerController, key: str) -> list[float]:
    return [row[key] for row in ctl.history]


def test_half_restores_the_anchor_and_accept_keeps_the_weights_and_resets_lr() -> None:
    model, opt = tiny()
    policy = Scripted("lr", ["accept", "half", "half", "accept"])
    ctl = InnerController(InnerSpec(("lr",), 2, {"lr": policy}), model, opt)  # type: ignore[dict-item]
    data, start = batches(), weights(model)
    run(model, opt, ctl, data, 2)  # the first block: accepted, it is the anchor now
    anchor, anchor_momenta = weights(model), momenta(opt)
    assert not same(anchor, start) and opt.param_groups[0]["lr"] == 0.1
    run(model, opt, ctl, data, 2)  # half: back to the anchor, weights and momenta
    assert same(weights(model), anchor) and same(momenta(opt), anchor_momenta)
    assert opt.param_groups[0]["lr"] == 0.05
    run(model, opt, ctl, data, 2)
    assert same(weights(model), anchor) and opt.param_groups[0]["lr"] == 0.025
    run(model, opt, ctl, data, 2)  # accept: keep the block's weights, lr back to alpha_c
    assert not same(weights(model), anchor) and opt.param_groups[0]["lr"] == 0.1
    assert column(ctl, "step") == [2, 4, 6, 8]
    assert column(ctl, "inner_alpha") == [0.1, 0.1, 0.05, 0.025]  # what each block ran with
    assert column(ctl, "inner_action_lr") == [0, -1, -1, 0]
    # The policy saw log2(lr / alpha_c) / 10 as its first feature.
    assert [round(float(s[0]), 6) for s in policy.seen] == [0.0, 0.0, -0.1, -0.2]


def test_a_grow_policy_keeps_the_block_and_doubles_lr_and_accept_keeps_lr() -> None:
    """The ``grow`` variant (a departure): ``grow`` keeps the weights and doubles the
    rate, ``accept`` keeps the weights and the rate, ``half`` restores the anchor."""
    model, opt = tiny()
    policy = Scripted("lr", ["grow", "accept", "half", "grow"], variant="grow")
    ctl = InnerController(InnerSpec(("lr",), 2, {"lr": policy}), model, opt)  # type: ignore[dict-item]
    data = batches()
    run(model, opt, ctl, data, 2)  # grow: the block is kept, lr 0.1 -> 0.2
    kept = weights(model)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    run(model, opt, ctl, data, 2)  # accept: kept, lr stays 0.2
    anchor = weights(model)
    assert not same(anchor, kept) and opt.param_groups[0]["lr"] == pytest.approx(0.2)
    run(model, opt, ctl, data, 2)  # half: back to the anchor, lr 0.1
    assert same(weights(model), anchor) and opt.param_groups[0]["lr"] == pytest.approx(0.1)
    run(model, opt, ctl, data, 2)
    assert not same(weights(model), anchor) and opt.param_groups[0]["lr"] == pytest.approx(0.2)
    assert column(ctl, "inner_alpha") == pytest.approx([0.1, 0.2, 0.2, 0.1])
    assert column(ctl, "inner_action_lr") == [2, 0, -1, 2]
    assert [round(float(s[0]), 6) for s in policy.seen] == [0.0, 0.1, 0.1, 0.0]


def test_bounds_keep_the_rate_within_the_spaces_range() -> None:
    """``InnerSpec.bounds`` (the space's range for ``lr``): ``grow`` stops at the
    top, ``half`` at the bottom."""
    model, opt = tiny()  # lr 0.1
    actions = ["grow"] * 3 + ["half"] * 4
    policy = Scripted("lr", actions, variant="grow")
    spec = InnerSpec(("lr",), 2, {"lr": policy}, bounds={"lr": (0.02, 0.3)})  # type: ignore[dict-item]
    ctl = InnerController(spec, model, opt)
    run(model, opt, ctl, batches(), 2 * len(actions))
    ran = [0.1, 0.2, 0.3, 0.3, 0.15, 0.075, 0.0375]  # what each block ran with
    assert column(ctl, "inner_alpha") == pytest.approx(ran)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02)  # 0.01875, raised to the bottom


def test_a_search_bounds_the_controller_by_its_spaces_range(
    small_space: Path, tmp_path: Path
) -> None:
    """A planned search's inner spec carries the space's range for each control."""
    lr_dir = str(random_policy(tmp_path / "lr", "lr"))
    plan = SearchRequest(space=small_space, inner_controller="lr", inner_policy=lr_dir).plan()
    assert plan.inner is not None and plan.inner.bounds == {"lr": (1e-3, 0.1)}
    fixed = small_space.read_text().replace('"lr": {"type"', '"lr0": {"type"')
    (tmp_path / "fixed.yaml").write_text(fixed.replace('"fixed": {', '"fixed": {"lr": 0.01, '))
    plan = SearchRequest(
        space=tmp_path / "fixed.yaml", inner_controller="lr", inner_policy=lr_dir
    ).plan()
    assert plan.inner is not None and plan.inner.bounds == {}  # a fixed lr: unbounded


def test_up_raises_the_weight_decay_from_the_anchor() -> None:
    model, opt = tiny(wd=0.01)
    ctl = InnerController(
        InnerSpec(("l2",), 2, {"l2": Scripted("l2", ["accept", "up", "half", "accept"])}),  # type: ignore[dict-item]
        model,
        opt,
    )
    data = batches()
    run(model, opt, ctl, data, 2)
    anchor = weights(model)
    run(model, opt, ctl, data, 2)
    assert same(weights(model), anchor)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.0125)
    run(model, opt, ctl, data, 2)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.00625)
    run(model, opt, ctl, data, 2)
    assert opt.param_groups[0]["weight_decay"] == 0.01
    assert column(ctl, "inner_action_l2") == [0, 1, -1, 0]
    assert column(ctl, "inner_lambda") == pytest.approx([0.01, 0.01, 0.0125, 0.00625])
    assert column(ctl, "inner_alpha") == [0.1] * 4  # not controlled


def test_a_steer_policy_keeps_every_block_and_sets_the_weight_decay() -> None:
    """The ``steer`` variant (a departure): ``raise``/``lower`` keep the block and
    then scale the weight decay by 1.25 / 0.5; ``accept`` keeps it; with ``lr`` also
    controlled, a ``half`` there restores the anchor and the ``raise`` still applies."""
    model, opt = tiny(wd=0.01)
    l2 = Scripted("l2", ["raise", "accept", "lower", "raise"], variant="steer")
    lr = Scripted("lr", ["accept", "accept", "accept", "half"])
    ctl = InnerController(InnerSpec(("lr", "l2"), 2, {"lr": lr, "l2": l2}), model, opt)  # type: ignore[dict-item]
    data, before = batches(), weights(model)
    for _ in range(3):
        run(model, opt, ctl, data, 2)
        assert not same(weights(model), before)  # every block kept
        before = weights(model)
    run(model, opt, ctl, data, 2)  # lr halves: the anchor is restored
    assert same(weights(model), before)
    assert column(ctl, "inner_lambda") == pytest.approx([0.01, 0.0125, 0.0125, 0.00625])
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.0078125)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert column(ctl, "inner_action_l2") == [3, 0, -2, 3]


def test_both_controls_keep_the_block_only_when_both_accept() -> None:
    model, opt = tiny(wd=0.01)
    policies: Any = {
        "lr": Scripted("lr", ["accept", "accept", "half"]),
        "l2": Scripted("l2", ["accept", "up", "accept"]),
    }
    ctl = InnerController(InnerSpec(("lr", "l2"), 2, policies), model, opt)
    data = batches()
    run(model, opt, ctl, data, 2)
    anchor = weights(model)
    run(model, opt, ctl, data, 2)  # lr accepts, l2 goes up: the anchor is restored
    assert same(weights(model), anchor)
    assert opt.param_groups[0]["lr"] == 0.1
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.0125)
    run(model, opt, ctl, data, 2)  # lr halves, l2 accepts (keeps its value)
    assert same(weights(model), anchor)
    assert opt.param_groups[0]["lr"] == 0.05
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.0125)


def test_an_exported_policy_halves_a_diverging_rate_then_accepts(tmp_path: Path) -> None:
    spec = resolve("lr", 2, str(improved_policy(tmp_path / "p")))
    x, y = next(batches(seed=5, n=1))
    model, opt = tiny(lr=2.0)
    before = F.mse_loss(model(x), y).item()
    ctl = InnerController(spec, model, opt)
    run(model, opt, ctl, batches(n=60), 60)
    actions = column(ctl, "inner_action_lr")
    assert -1 in actions and 0 in actions  # a too large rate is halved, then accepted
    assert F.mse_loss(model(x), y).item() < before
    plain, plain_opt = tiny(lr=2.0)  # the same rate uncontrolled
    run(plain, plain_opt, InnerController(spec, plain, plain_opt), batches(n=60), 0)
    for xb, yb in batches(n=60):
        plain_opt.zero_grad()
        F.mse_loss(plain(xb), yb).backward()
        plain_opt.step()
    assert not F.mse_loss(plain(x), y).item() < before


def test_the_state_survives_a_checkpoint_exactly(tmp_path: Path) -> None:
    spec = resolve("lr", 2, str(random_policy(tmp_path / "p", "lr")))
    model, opt = tiny(lr=0.5)
    ctl = InnerController(spec, model, opt)
    run(model, opt, ctl, batches(), 7)  # mid-block
    assert len(clean(ctl.report()[REPORT_KEY])) == 3  # an epoch's report, then its checkpoint
    buf = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "inner": ctl.state_dict()}, buf
    )
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # as the loop reads checkpoints
    model2, opt2 = tiny(lr=0.5)
    ctl2 = InnerController(spec, model2, opt2)  # as the loop: made, then restored
    model2.load_state_dict(state["model"])
    opt2.load_state_dict(state["opt"])
    ctl2.load_state_dict(state["inner"])
    assert clean(ctl2.report()[REPORT_KEY]) == []  # reported before the checkpoint
    tail = list(batches(seed=1, n=9))
    run(model, opt, ctl, iter(tail), 9)
    run(model2, opt2, ctl2, iter(tail), 9)
    assert same(weights(model), weights(model2))
    assert ctl.history == ctl2.history and len(ctl.history) == 8
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_the_loop_reports_steps_and_a_resumed_trial_continues_them(tmp_path: Path) -> None:
    spec = TrialSpec(
        task=Blobs(),
        seed=0,
        max_epochs=2,
        num_workers=0,
        inner=resolve("lr", 2, str(random_policy(tmp_path / "p", "lr"))),
    )
    first = Recorder(tmp_path)
    train({"lr": 0.05, "optimizer": "adam"}, spec, "t", first)
    steps = [[row["step"] for row in clean(r[REPORT_KEY])] for r in first.reports]
    assert steps == [[2, 4], [6, 8, 10]]  # 5 batches an epoch, K = 2: steps continue
    saved = torch.load(first.saved[0] / STATE_FILE, weights_only=True)
    assert saved["inner"]["step"] == 5 and len(saved["inner"]["history"]) == 2
    (tmp_path / "r").mkdir()
    resumed = Recorder(tmp_path / "r", resume_from=first.saved[0])
    train({"lr": 0.05, "optimizer": "adam"}, spec, "t", resumed)
    assert resumed.reports[0][REPORT_KEY] == first.reports[1][REPORT_KEY]
    assert resumed.reports[0]["train_loss"] == first.reports[1]["train_loss"]


def test_l2_without_weight_decay_fails_the_trial_clearly(tmp_path: Path) -> None:
    spec = TrialSpec(
        task=Blobs(),
        seed=0,
        max_epochs=1,
        num_workers=0,
        inner=resolve("l2", 2, str(random_policy(tmp_path / "p", "l2"))),
    )
    with pytest.raises(TaskError, match="needs a weight_decay > 0"):
        train({"lr": 0.05}, spec, "t", Recorder(tmp_path))


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"inner_controller": "momentum"}, "--inner-controller must be lr, l2 or lr,l2"),
        ({"inner_controller": "lr,lr"}, "--inner-controller must be"),
        ({"inner_controller": "lr", "inner_every": 1}, "--inner-every must be an integer >= 2"),
        ({"inner_every": 5}, "need --inner-controller"),
        ({"inner_policy": "/tmp"}, "need --inner-controller"),
    ],
)
def test_bad_inner_options_are_one_line_errors(options: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as err:
        SearchRequest(**options)
    assert "\n" not in str(err.value)


def test_the_shipped_lr_policy_is_the_default() -> None:
    """``weights/qgd_lr`` (b1: grow actions, pretrained on the training loop's blocks)
    is what ``--inner-controller lr`` uses without ``--inner-policy``."""
    plan = SearchRequest(inner_controller="lr").plan()  # digits_mlp
    assert plan.inner is not None and plan.inner.bounds == {"lr": (1e-4, 0.3)}
    policy = plan.inner.policies["lr"]
    assert plan.inner.actions("lr") == ("half", "accept", "grow")
    assert policy.manifest["settings"]["env"] == "block"


def test_the_shipped_l2_policy_is_the_default() -> None:
    """``weights/qgd_l2`` (s32: steer actions, never rejects a step) is what
    ``--inner-controller l2`` uses without ``--inner-policy``, bounded by the space."""
    plan = SearchRequest(space="cifar10_mlp", inner_controller="l2").plan()
    assert plan.inner is not None and plan.inner.bounds == {"l2": (1e-6, 1e-2)}
    assert plan.inner.actions("l2") == ("lower", "accept", "raise")
    assert plan.inner.policies["l2"].manifest["settings"]["lambda_range"] == 32


def test_planning_checks_the_policies_and_the_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lr_dir = str(random_policy(tmp_path / "lr", "lr"))
    monkeypatch.setattr("tune_app.controller.inner.WEIGHTS", tmp_path / "none")
    with pytest.raises(ConfigError, match="pass --inner-policy DIR"):
        SearchRequest(inner_controller="l2").plan()  # no policy shipped in WEIGHTS
    with pytest.raises(ConfigError, match="controls 'lr'; give one policy for each of l2"):
        SearchRequest(inner_controller="l2", inner_policy=lr_dir).plan()
    with pytest.raises(ConfigError, match="has no policy for l2"):
        SearchRequest(inner_controller="lr,l2", inner_policy=lr_dir).plan()
    l2_dir = str(random_policy(tmp_path / "l2", "l2"))
    with pytest.raises(ConfigError, match="neither searches nor fixes"):
        SearchRequest(inner_controller="l2", inner_policy=l2_dir).plan()  # digits_mlp
    with pytest.raises(ConfigError, match="is a lookup objective"):
        SearchRequest(space="benchmarks/branin", inner_controller="lr", inner_policy=lr_dir).plan()
    plan = SearchRequest(inner_controller="lr", inner_every=3, inner_policy=lr_dir).plan()
    assert plan.inner is not None and plan.inner.controls == ("lr",) and plan.inner.every == 3
    grow_dir = random_policy(tmp_path / "grow", "lr", variant="grow")
    plan = SearchRequest(inner_controller="lr", inner_policy=str(grow_dir)).plan()
    assert plan.inner is not None and plan.inner.actions("lr") == ("half", "accept", "grow")
    manifest, text = grow_dir / "manifest.json", (grow_dir / "manifest.json").read_text()
    for variant in ("seed", "bold"):  # three actions, but not the seed's; an unknown variant
        manifest.write_text(text.replace('"variant": "grow"', f'"variant": "{variant}"'))
        with pytest.raises(ConfigError, match="made for another state or actions"):
            SearchRequest(inner_controller="lr", inner_policy=str(grow_dir)).plan()


def test_ddp_ranks_take_the_same_actions(tmp_path: Path) -> None:
    """Two gloo processes, each with its own data: the same actions, the same weights."""
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    policy = str(improved_policy(tmp_path / "p"))
    mp.spawn(ddp_rank, args=(free_port(), policy, str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["local"] != r1["local"]  # the ranks' losses differ...
    assert r0["history"] == r1["history"] and len(r0["history"]) == 8  # ...their actions not
    assert {row["inner_action_lr"] for row in r0["history"]} == {-1.0, 0.0}
    assert same(r0["weights"], r1["weights"])


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_a_search_records_the_controller_in_mlflow(
    small_space: Path, tracking_uri: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from tests.conftest import children
    from tune_app import run_search

    result = run_search(
        "random",
        small_space,
        budget_epochs=2,
        max_trials=1,
        num_workers=0,
        inner_controller="lr",
        inner_every=4,
        inner_policy=str(random_policy(tmp_path / "p", "lr")),
        tracking_uri=tracking_uri,
        storage_path=tmp_path / "runs",
        verbose=False,
    )
    client = MlflowClient(tracking_uri)
    (kid,) = children(tracking_uri, result)
    alpha = client.get_metric_history(kid.info.run_id, "inner_alpha")
    actions = client.get_metric_history(kid.info.run_id, "inner_action_lr")
    steps = sorted(m.step for m in alpha)
    assert len(steps) >= 4 and all(s % 4 == 0 for s in steps)  # step = optimizer step
    assert sorted(m.step for m in actions) == steps
    assert {m.value for m in actions} <= {-1.0, 0.0}
    assert len(client.get_metric_history(kid.info.run_id, "inner_lambda")) == len(steps)
    assert [a.path for a in client.list_artifacts(kid.info.run_id, "inner")] == [
        "inner/trial-001.png"
    ]
    params = client.get_run(result.mlflow_run_id).data.params
    assert (params["inner_controller"], params["inner_every"]) == ("lr", "4")
    # benchmarks/inner_actions.py reads the same store: one trial, its actions counted
    (line,) = _benchmark("inner_actions").summarise(tracking_uri)
    assert "lr controller in 1 trials; actions: " in line
    counted = sum(int(n) for n in re.findall(r"(?:accept|half) (\d+)", line))
    assert counted == len(steps) and "log2(last/first inner_alpha) median" in line


class _SeriesTracker:
    """An MLflow stand-in that stores points and loses the reply of the first series write."""

    def __init__(self) -> None:
        self.points: list[tuple[str, str, int]] = []
        self.lose_next = True
        self.client = SimpleNamespace(get_metric_history=self._history)

    def _history(self, run_id: str, key: str) -> list[Any]:
        return [SimpleNamespace(step=s) for r, k, s in self.points if (r, k) == (run_id, key)]

    def start_run(self, name: str, tags: Any, params: Any, parent: str) -> str:
        return name

    def find_child(self, parent: str, trial: str) -> str | None:
        return None

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, strict: bool) -> None:
        self.points += [(run_id, k, step) for k in metrics]

    def log_series(self, run_id: str, points: list[tuple[int, str, float]]) -> None:
        self.points += [(run_id, k, s) for s, k, _ in points]
        if self.lose_next:
            self.lose_next = False
            raise ConnectionError("reply lost")


def test_per_step_metrics_are_logged_once_at_their_optimizer_steps(tmp_path: Path) -> None:
    from tune_app.tracking.outbox import JOURNAL, Journal, Outbox

    tracker = _SeriesTracker()
    box = Outbox(Journal(tmp_path / JOURNAL), tracker, "parent", "val_accuracy")
    box.submit({"k": "trial", "id": "t", "index": 1, "config": {}})
    rows = [
        {"step": 4, "inner_alpha": 0.1, "inner_action_lr": -1.0},
        {"step": 8, "inner_alpha": 0.05},
    ]
    box.submit(
        {
            "k": "result",
            "id": "t",
            "epoch": 1,
            "spent": 1,
            "best": 0.5,
            "metrics": {},
            "series": rows,
        }
    )
    while not box.flush(force=True):  # the first try fails after MLflow stored the points
        pass
    logged = sorted(p for p in tracker.points if p[0] == "trial-001" and p[1].startswith("inner"))
    assert logged == [
        ("trial-001", "inner_action_lr", 4),
        ("trial-001", "inner_alpha", 4),
        ("trial-001", "inner_alpha", 8),
    ]


def test_a_constant_policy_takes_its_one_action_whatever_the_features(tmp_path: Path) -> None:
    """benchmarks/constant_policy.py: the inner controller's fixed-rule baseline."""
    module = _benchmark("constant_policy")
    like = random_policy(tmp_path / "like", "lr", variant="grow")
    out = module.write(like, "grow", tmp_path / "grow")
    policy = resolve("lr", 10, str(out)).policies["lr"]
    rng = np.random.default_rng(0)
    chosen = {
        int(policy.q_values(rng.uniform(-1, 1, 6).astype(np.float32)).argmax()) for _ in range(50)
    }
    assert chosen == {2} and policy.manifest["constant_action"] == "grow"
    with pytest.raises(SystemExit, match="chooses among half, accept, grow"):
        module.write(like, "up", tmp_path / "up")
