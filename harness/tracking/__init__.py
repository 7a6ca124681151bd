"""MLflow: a parent run per invocation and a child run per arm (mlflow_tracker); `harness ui`
(ui)."""
