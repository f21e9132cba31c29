"""Kubeflow Pipelines API client: connect, upload, runs and recurring runs."""
