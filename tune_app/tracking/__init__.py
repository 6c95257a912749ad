"""Tracking: the MLflow store (the only module that imports MLflow), the run
journal and its outbox, the driver's run state, the Tune callback that records
every trial, and ``sync``.
"""
