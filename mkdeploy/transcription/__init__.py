"""Transcription: audio in, transcripts out. The runtime (:class:`~mkdeploy.transcription.runtime.WhisperTranscriber`)
composes the engine (a loaded PyTorch or ONNX Runtime model), the batching into encoder windows, the decoding
strategies and their greedy loops, the silence/VAD/no-speech gates, language detection, word alignment,
long-form and packed audio, and the output writers (docs/architecture.md, the layers)."""
