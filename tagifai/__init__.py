"""tagifai: tag ML project descriptions, tuned with Optuna and tracked in MLflow."""

__all__ = ["__version__"]

__version__ = "0.1.0"
