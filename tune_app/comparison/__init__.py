"""Head-to-head comparisons: :func:`compare`, the report, and second opinions on
the finalists (cross-validation, with/without tuning)."""
