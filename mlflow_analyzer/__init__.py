"""mlflow-analyzer: deterministic analysis of MLflow traces for LLM and agent applications."""

__version__ = "0.1.0"
