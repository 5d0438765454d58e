"""The OpenAI-compatible surface (`/v1`): wire types, pure converters, routes."""
