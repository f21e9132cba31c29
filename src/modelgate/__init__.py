"""modelgate: take an LLM from the Hugging Face Hub to a gated vLLM InferenceService."""

__version__ = "0.1.0"
