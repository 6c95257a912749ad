"""Running one search: the request, the driver that assembles Ray Tune, the epoch
budget and its ledger actor, resume, and placement on the cluster.

Kept free of imports: the ledger actor's worker imports :mod:`tune_app.run.ledger`
and must start without torch, pandas or MLflow.
"""
