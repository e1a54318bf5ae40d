"""Backends that run a JobPlan: `local` (emulates the SageMaker container on this machine) and `sagemaker`.

They import the plan (`rlrunner.runner`), `rlrunner.contract`, `rlrunner.aws` and `rlrunner.processes`;
never the container side (`rlrunner.entry`), the sweep layer, or each other.
"""
