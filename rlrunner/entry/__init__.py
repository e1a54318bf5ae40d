"""Container side: what runs inside the training job (and in the local emulation of it).

The generic launcher (`train_unity`), the RLlib env creator over the Unity adapter (`unity_env`),
the algorithm configuration, custom RLModules, export of the trained policy, its evaluation and
the multi-host Ray cluster. It reads what the host wrote through `rlrunner.contract`, and may import
`rlrunner.unity`, `rlrunner.envs`, `rlrunner.policy`, `rlrunner.processes` and `rlrunner.schema` —
never `rlrunner.backends`, `rlrunner.sweep`, `rlrunner.cli` or `rlrunner.serving`.
"""
