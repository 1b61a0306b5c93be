# `mkd serve` on a model directory mounted at /model (README, Serve):
#   docker build -t mkdeploy-serve .
#   docker run -p 8000:8000 -v $PWD/models/tiny.en-onnx:/model:ro -e MKD_API_KEY=secret mkdeploy-serve
# Extra flags go after the image name, e.g. `... mkdeploy-serve --variant int8 --max-batch 16`.
# The image holds the built wheel, not the source folders: what it runs is what users `pip install`.
# Its install step is .ci/install_wheel.sh, the script tests/test_packaging.py runs in a fresh venv
# (base images cannot be pulled on this project's machines, so the image itself is not built in CI).

# --- build: the wheel, from the same files the sdist holds
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY mkdeploy mkdeploy
COPY cli cli
COPY models models
COPY exporters exporters
RUN pip install --no-cache-dir build && python -m build --wheel --outdir /dist

# --- runtime: the base install (ONNX Runtime, numpy, tokenizers, the server; no torch, transformers or optimum:
# mkdeploy/lean/), run as an unprivileged user. It serves ONNX exports (`mkd export` them with the full install);
# Silero VAD and PyTorch models need the [serve] and [train] extras: build with --build-arg EXTRAS=train,serve
FROM python:3.11-slim
# libsndfile decodes uploads (wav, flac, ogg/opus, mp3)
RUN apt-get update && apt-get install -y --no-install-recommends libsndfile1 && rm -rf /var/lib/apt/lists/*
# EXTRAS="train,serve" adds torch (set TORCH to a CPU or CUDA build as your registry offers)
ARG EXTRAS=""
ARG TORCH="none"
COPY .ci/install_wheel.sh /usr/local/bin/mkd-install-wheel
COPY --from=build /dist /dist
RUN TORCH="$([ -n "$EXTRAS" ] && [ "$TORCH" = none ] && echo torch==2.13.0 || echo "$TORCH")" \
    mkd-install-wheel /dist/mkdeploy-*.whl "$EXTRAS" && rm -rf /dist
RUN useradd --create-home --uid 10001 mkd
USER mkd
WORKDIR /home/mkd

ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
EXPOSE 8000
# SIGTERM (docker stop) drains in-flight requests and exits 0; give it time: docker stop -t 60
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
ENTRYPOINT ["mkd", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
