"""The RL controller: the tuning MDP, its pretraining with RLlib DQN, the shipped policy.

- :mod:`.mdp`: state features, actions and dynamics shared by training and search.
- :mod:`.surfaces`: seeded synthetic tuning tasks (the pretraining distribution).
- :mod:`.env`: the MDP as a gymnasium environment over those tasks.
- :mod:`.pretrain`: RLlib DQN pretraining; exports a tensors-only checkpoint.
- :mod:`.policy`: loads a checkpoint (``weights_only=True``) and computes Q-values.

The Tune searcher built on these is :mod:`tune_app.strategies.dqn`.
"""
