"""rlrunner: train Unity ML-Agents environments with Ray RLlib from a YAML spec, locally or on SageMaker."""

__version__ = "0.1.0"
