"""Backends that run a JobPlan: `local` (this machine) and `sagemaker` (training jobs)."""
