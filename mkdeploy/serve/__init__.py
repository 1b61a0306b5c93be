"""`mkd serve`: an OpenAI-compatible transcription server (FastAPI + uvicorn, the ``[serve]`` extra).

Layout as in speaches and vLLM's OpenAI server: ``config`` (the settings dataclass), ``schemas`` (pydantic
request/response models), ``errors`` (OpenAI's error shape), ``batcher`` (cross-request dynamic batching
on one inference thread), ``metrics`` (Prometheus), ``engine`` (the loaded model and its warm-up),
``routers/`` (one router per API surface) and ``app`` (the application factory and the uvicorn runner).
"""

from mkdeploy.serve.config import ServeConfig

__all__ = ["ServeConfig"]
