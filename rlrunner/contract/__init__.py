"""What both sides of the container boundary agree on, and nothing else.

The host (`runner`, `backends`, `sweep`, `deploy`, `serving`, `cli`) writes these formats and the
container side (`rlrunner.entry`) reads them, or the other way round: the env-var encoding of the
experiment, SageMaker's container contract (the `/opt/ml` layout, `SM_*` variables, channels, the
in-container path of the player build), the cluster settings of a multi-host job, the run and model
directories, checkpoints, the metrics line, and the exit codes and error root. Every fact lives in
exactly one module here. Modules in this package import the standard library, pydantic and
`rlrunner.schema` only (checked by import-linter, see pyproject.toml).
"""
