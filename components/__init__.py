"""What runs inside the pipeline: ingest, evaluation config and the TFX module files."""
