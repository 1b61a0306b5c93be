"""Inherited alignment heads against heads chosen by measurement (issue 28, item 1).

A model whose generation config names no usable alignment heads gets them from
:func:`mkdeploy.transcription.alignment.choose_alignment_heads` (the heads whose attention peak best follows token order).
Should merge or student init measure and save them for every student instead? This script measures the
top 8 on 8 dev clips (the decoder forced along their references), writes a copy of each model with those
heads, and scores both copies on benchmarks/word_onsets.py's joined clips (first words within 0.2 s of
their known onset, DTW + the pause rules).

    python benchmarks/alignment_heads.py --models work/demo/models/tiny.en work/demo/models/tiny.en-3dec-distilled \\
        --dev work/demo/corpus/dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def measured_heads(model_dir: Path, dev: Path, clips: int = 8) -> list[list[int]]:
    import soundfile as sf
    import torch

    from mkdeploy.constants import SAMPLE_RATE
    from mkdeploy.data import load_manifest
    from mkdeploy.models.student import load_whisper
    from mkdeploy.transcription.alignment import choose_alignment_heads
    from mkdeploy.transcription.decoding import decoder_prompt

    model, proc = load_whisper(model_dir)
    utts = load_manifest(dev, require_text=True)[:clips]
    audios = [sf.read(u.audio, dtype="float32")[0] for u in utts]
    feats = proc.feature_extractor(audios, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    with torch.inference_mode():
        states = model.get_encoder()(feats).last_hidden_state
    tok = proc.tokenizer
    seqs = [tok(" " + (u.text or "").strip(), add_special_tokens=False).input_ids for u in utts]
    prompt = decoder_prompt(tok, model.generation_config)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    return choose_alignment_heads(model, tok, states, prompt, seqs, [len(a) / SAMPLE_RATE for a in audios], eot)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", type=Path, nargs="+", required=True)
    ap.add_argument("--dev", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("work/heads"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "alignment_heads.md")
    args = ap.parse_args()
    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from word_onsets import build, measure

    clips = build(Path("work/onsets"), 16)
    lines = [
        "# Alignment heads: inherited vs measured",
        "",
        f"`python benchmarks/alignment_heads.py --models {' '.join(map(str, args.models))} --dev {args.dev}`; "
        f"{len(clips)} joined clips of benchmarks/word_onsets.py (48 utterances), PyTorch fp32.",
        "",
        "| model | heads | which | first word within 0.2 s | early > 0.2 s | late > 0.2 s |",
        "|---|---|---|--:|--:|--:|",
    ]
    for src in args.models:
        heads = measured_heads(src, args.dev)
        copy = args.workdir / f"{src.name}-measured"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(src, copy)
        gen = json.loads((copy / "generation_config.json").read_text())
        inherited = gen.get("alignment_heads")
        gen["alignment_heads"] = heads
        (copy / "generation_config.json").write_text(json.dumps(gen, indent=1))
        for which, model, h in (("config (inherited)", src, inherited), ("measured", copy, heads)):
            r = measure(model, clips)
            lines.append(
                f"| {src.name} | {which} | `{h}` | {100 * r['within_0.2s']:.1f}% | {r['early_over_0.2s']} "
                f"| {r['late_over_0.2s']} |"
            )
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
