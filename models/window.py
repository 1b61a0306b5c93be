"""Short-window encoders: a Whisper encoder that sees as much audio as there is, not 30 s of padding.

Whisper pads every clip to a 30 s window, so the encoder costs the same for a 2 s clip as for a 30 s one
(about two thirds of a short clip's transcription time on CPU). The encoder itself is length-agnostic but
for its sinusoidal position table: a window of N frames uses the table's first N rows, which is exactly
what a model built with ``max_source_positions=N`` holds (frame t of a short window is frame t of the
30 s window). Hugging Face's encoder refuses any input that is not 2 × max_source_positions mel frames,
so :func:`enable_encoder_windows` gives the encoder a forward that takes any even number of frames up to
that and slices the table; at full length it calls Hugging Face's own forward, so nothing changes for
30 s inputs. The same forward, traced, gives an ONNX encoder with a dynamic frame axis.

Trimming the window of a model trained on 30 s windows (whisper.cpp's ``audio_ctx``) costs accuracy: the
model never saw audio end without padding after it. A *windowed student* is trained on the windows it
will serve (:mod:`mkdeploy.distill.trainer` pads each batch to the smallest bucket that holds it), and
carries its buckets in its config as ``mkdeploy_encoder_buckets`` so the runtime, the export and the bench
use them without being told.

A small set of buckets (5, 10, 20, 30 s by default) keeps the number of distinct shapes small (one warm-up
per shape on GPU, batches group clips of one bucket) while a short clip pays for at most twice its length.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from mkdeploy.constants import MEL_FRAMES_PER_S, SAMPLE_RATE
from mkdeploy.errors import MkdError
from mkdeploy.lean.windows import (
    BUCKETS_ATTR,
    DEFAULT_BUCKETS,
    FULL_WINDOW_S,
    ONNX_DYNAMIC_FRAMES_ATTR,
    WindowConfig,
    normalise_buckets,
    plan_batches,
)

__all__ = [
    "BUCKETS_ATTR",
    "DEFAULT_BUCKETS",
    "FULL_WINDOW_S",
    "ONNX_DYNAMIC_FRAMES_ATTR",
    "WindowConfig",
    "normalise_buckets",
    "plan_batches",
]


def parse_buckets(text: str) -> tuple[int, ...]:
    """Parse ``"5,10,20,30"`` (the CLI's form)."""
    parts = [p.strip().rstrip("s") for p in text.split(",") if p.strip()]
    if not parts:
        raise MkdError(f"--encoder-buckets {text!r}: give seconds separated by commas, e.g. 5,10,20,30")
    try:
        return normalise_buckets([float(p) for p in parts])
    except ValueError:
        raise MkdError(f"--encoder-buckets {text!r}: give seconds separated by commas, e.g. 5,10,20,30") from None


def model_buckets(config) -> tuple[int, ...] | None:
    """The buckets a model's config carries (None for an ordinary 30 s model)."""
    buckets = getattr(config, BUCKETS_ATTR, None)
    return normalise_buckets(buckets) if buckets else None


def set_model_buckets(config, buckets: Sequence[int] | None) -> None:
    """Record (or with None, remove) the buckets in a model config; ``save_pretrained`` keeps them."""
    if buckets is None:
        if hasattr(config, BUCKETS_ATTR):
            delattr(config, BUCKETS_ATTR)
        return
    setattr(config, BUCKETS_ATTR, list(normalise_buckets(buckets)))


def window_frames(seconds: int) -> int:
    """Mel frames of a ``seconds`` window (the encoder's input length)."""
    return seconds * MEL_FRAMES_PER_S


def _windowed_forward(
    self,
    input_features,
    attention_mask=None,
    head_mask=None,
    output_attentions=None,
    output_hidden_states=None,
    return_dict=None,
):
    """WhisperEncoder.forward for any even number of mel frames up to 2 × max_source_positions.

    Same computation as Hugging Face's forward (conv stem, position table, layers, final norm); the only
    change is ``embed_positions.weight[:n]`` instead of the whole table. Full-length inputs go to Hugging
    Face's own forward unless traced: the ONNX export traces this path so its frame axis stays dynamic.
    """
    import torch  # heavy; imported on use so the core import stays light
    from torch import nn  # heavy; imported on use so the core import stays light
    from transformers.modeling_outputs import BaseModelOutput  # heavy; imported on use so the core import stays light

    frames = input_features.shape[-1]
    full = 2 * self.max_source_positions
    tracing = torch.jit.is_tracing()
    if not tracing:
        if frames == full or head_mask is not None or output_attentions:
            return self._hf_forward(
                input_features,
                attention_mask=attention_mask,
                head_mask=head_mask,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=return_dict,
            )
        if frames > full or frames % 2 or frames < 2:
            raise ValueError(f"the encoder takes an even number of mel frames up to {full}, got {frames}")
    output_hidden_states = (
        output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
    )
    return_dict = return_dict if return_dict is not None else self.config.use_return_dict
    x = nn.functional.gelu(self.conv1(input_features))
    x = nn.functional.gelu(self.conv2(x)).permute(0, 2, 1)
    x = x + self.embed_positions.weight[: x.shape[1]]
    x = nn.functional.dropout(x, p=self.dropout, training=self.training)
    states = () if output_hidden_states else None
    for layer in self.layers:
        if output_hidden_states:
            states = states + (x,)
        if self.training and torch.rand([]) < self.layerdrop:  # LayerDrop, as Hugging Face does it
            continue
        x = layer(x, None, layer_head_mask=None, output_attentions=False)[0]
    x = self.layer_norm(x)
    if output_hidden_states:
        states = states + (x,)
    if not return_dict:
        return tuple(v for v in (x, states) if v is not None)
    return BaseModelOutput(last_hidden_state=x, hidden_states=states)


def enable_encoder_windows(model) -> None:
    """Let ``model``'s Whisper encoder take windows shorter than 30 s (idempotent).

    Args:
        model: a ``WhisperForConditionalGeneration`` or ``WhisperModel`` (before peft wrapping; peft keeps
            the encoder instance).
    """
    encoder = model.get_encoder()
    if getattr(encoder, "_hf_forward", None) is not None:
        return
    encoder._hf_forward = encoder.forward
    encoder.forward = types.MethodType(_windowed_forward, encoder)


class windowed_encoder_class:
    """Context manager: every ``WhisperEncoder`` built or run inside takes short windows.

    The ONNX export loads the model itself (optimum's ``main_export``), so the patch must be on the class
    while it traces; it is undone on exit.
    """

    def __enter__(self):
        from transformers.models.whisper.modeling_whisper import (
            WhisperEncoder,  # heavy; imported on use so the core import stays light
        )

        self._cls = WhisperEncoder
        self._orig = WhisperEncoder.forward
        orig = self._orig

        # optimum reads the forward's signature to match its dummy inputs: spell the arguments out
        def forward(
            self,
            input_features,
            attention_mask=None,
            head_mask=None,
            output_attentions=None,
            output_hidden_states=None,
            return_dict=None,
        ):
            self._hf_forward = types.MethodType(orig, self)
            return _windowed_forward(
                self, input_features, attention_mask, head_mask, output_attentions, output_hidden_states, return_dict
            )

        WhisperEncoder.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        self._cls.forward = self._orig


@contextmanager
def segment_frames(model, window_s: int) -> Iterator[None]:
    """Let ``generate`` work on a short window: it pads input features to 2 × ``config.max_source_positions``
    mel frames (its segment length, also used by the temperature fallback and timestamps), so the config
    names the window while the call runs. The encoder's own length check reads its attribute, not the
    config (see :func:`enable_encoder_windows`), and the position table is untouched."""

    config = model.config
    full = config.max_source_positions
    config.max_source_positions = min(full, window_frames(window_s) // 2)  # encoder frames: mel frames / 2
    try:
        yield
    finally:
        config.max_source_positions = full


def window_features(feature_extractor, audios, window_s: int):
    """Log-mel features of ``audios`` padded (or cut) to a ``window_s`` encoder window, not to 30 s: the
    encoder's cost follows its input length. The transcriber's and the trainer's batches both use it."""
    return feature_extractor(
        list(audios),
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
        padding="max_length",
        max_length=window_s * SAMPLE_RATE,
        truncation=True,
    ).input_features
