"""DVC stages: each reads its params, calls the library, writes its outputs, metrics and MLflow run."""
