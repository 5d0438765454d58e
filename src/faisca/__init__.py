"""faisca: self-hosted LLM serving with OpenAI- and Ollama-compatible APIs."""

__version__ = "0.1.0"

__all__ = ["__version__"]
