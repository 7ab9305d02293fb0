"""Ways to run a router: the OpenAI-compatible endpoint, batch and Spark scoring, and the mlflow
flavour."""
