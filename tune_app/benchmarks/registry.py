"""The one list of known-optimum benchmarks: name -> ``"module:attr"``.

A leaf module (no imports), so the task registry can list benchmarks without
importing them.
"""

from __future__ import annotations

BENCHMARKS: dict[str, str] = {
    "branin": "tune_app.benchmarks.synthetic:Branin",
    "hartmann6": "tune_app.benchmarks.synthetic:Hartmann6",
    "branin_mf": "tune_app.benchmarks.synthetic:BraninMultiFidelity",
    "digits_tabular": "tune_app.benchmarks.tabular:DigitsTabular",
}
