"""A protocol-compatible stand-in for ML-Agents' "Basic" Unity build."""
