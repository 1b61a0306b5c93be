# `mkd serve` on a model directory mounted at /model (README, Serve):
#   docker build -t mkdeploy-serve .
#   docker run -p 8000:8000 -v $PWD/models/tiny.en-onnx:/model:ro -e MKD_API_KEY=secret mkdeploy-serve
# Extra flags go after the image name, e.g. `... mkdeploy-serve --variant int8 --max-batch 16`.
FROM python:3.11-slim

# libsndfile decodes uploads (wav, flac, ogg/opus, mp3)
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first, pinned as in the Makefile (set TORCH to a CPU or CUDA build as your registry offers)
ARG TORCH="torch==2.13.0"
RUN pip install --no-cache-dir "$TORCH"
COPY pyproject.toml README.md ./
COPY mkdeploy mkdeploy
COPY cli cli
COPY models models
COPY exporters exporters
RUN pip install --no-cache-dir ".[serve]"

ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
EXPOSE 8000
# SIGTERM (docker stop) drains in-flight requests and exits 0; give it time: docker stop -t 60
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
ENTRYPOINT ["mkd", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
