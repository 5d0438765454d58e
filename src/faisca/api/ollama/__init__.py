"""The Ollama-compatible surface (`/api`): field names, defaults and NDJSON framing of Ollama's own API."""
