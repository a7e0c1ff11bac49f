"""Training, evaluation and model-building scripts: never imported by the running bot or worker."""
