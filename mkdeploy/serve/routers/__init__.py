"""One FastAPI router per API surface: transcriptions, models, and health/metrics."""
