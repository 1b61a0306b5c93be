"""Inference on an ONNX export with ONNX Runtime, numpy and ``tokenizers`` alone (issue 47).

Nothing in this folder imports torch, transformers or optimum (the import contract in pyproject.toml says
so and ``make lint`` checks it): the base install serves an export without the training stack. The PyTorch
and optimum engines (:mod:`mkdeploy.transcription`) decode through the same loop and rules
(:mod:`mkdeploy.lean.greedy`), so no decoding rule exists twice.
"""
