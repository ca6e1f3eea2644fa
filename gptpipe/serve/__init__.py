"""Serving model folders over HTTP: continuous batching, an OpenAI-compatible API, a chat page."""
