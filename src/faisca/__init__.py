"""faisca: self-hosted LLM serving with OpenAI- and Ollama-compatible APIs."""

from faisca.client import AI, AsyncClient, Client, FaiscaClientError

__version__ = "0.1.0"

__all__ = ["AI", "AsyncClient", "Client", "FaiscaClientError", "__version__"]
