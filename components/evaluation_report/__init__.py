"""The evaluation report and model card: built from the Evaluator's artifacts, inside the
pipeline (a component after the Evaluator) and from ML Metadata for any past run."""
