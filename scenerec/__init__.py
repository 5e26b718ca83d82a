"""scenerec: an LLM-assisted, multi-scenario recommender for Kubeflow, KServe and Feast."""

__version__ = "0.1.0"
