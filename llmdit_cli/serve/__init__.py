"""`llmdit serve`: the engine behind an HTTP API and a web page (FastAPI, the `serve` extra)."""
