"""Does a clip's int8 transcript depend on its batch? The demo's distilled student, dynamic per-channel int8
(what the demo shipped) against the batch-invariant schemes `mkd export` chooses among (blockwise decoder with
an fp32 encoder, or with a static QDQ int8 encoder calibrated on the demo's dev clips), beside fp32 (issue 46).

Usage:
    python benchmarks/int8_batch_invariance.py WORKDIR [--model tiny.en-windowed-distilled]
        [--out benchmarks/results/int8_batch_invariance.md]

WORKDIR is a finished `make demo` work directory. The fp32 export there is quantised with each scheme; every
variant transcribes the in-domain test clips one at a time and in batches of 8 (the demo's decoding:
language en, no timestamps): clips whose text differs between the two, WER on each test set at batch 8
against the model's PyTorch fp32 (the demo's scores), and one `mkd bench` run of the variants (batch 1 p50,
batch 8 clips/s) on the in-domain clips.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path

from mkdeploy.audio import load_audio
from mkdeploy.bench import ModelSpec, environment, run_bench
from mkdeploy.data import load_manifest
from mkdeploy.demo.corpus import TEST_SPLITS
from mkdeploy.demo.report import TITLES
from mkdeploy.evaluate import error_rates
from mkdeploy.exporters.int8 import SCHEMES, quantize_scheme
from mkdeploy.exporters.onnx import copy_side_files
from mkdeploy.transcription.runtime import TranscriptionOptions, WhisperTranscriber

VARIANTS = {
    "per-channel (dynamic)": "per-channel",
    "blockwise-decoder-fp32-encoder": "blockwise-decoder-fp32-encoder",
    "blockwise-decoder-static-encoder": "blockwise-decoder-static-encoder",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--model", default="tiny.en-windowed-distilled")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()

    w, fp32 = a.workdir, a.workdir / "models" / f"{a.model}-onnx"
    # static scales are fixed on the dev clips (the demo's checkpoint selection set), never on test audio
    calibration = [load_audio(u.audio) for u in load_manifest(w / "corpus" / "dev.jsonl")[:16]]
    dirs = {}
    for label, scheme in VARIANTS.items():
        d = w / "int8_batch_invariance" / scheme
        if not (d / "decoder_model_merged.onnx").exists():
            shutil.rmtree(d, ignore_errors=True)
            quantize_scheme(fp32, d, SCHEMES[scheme], calibration)
            copy_side_files(fp32, d)
        dirs[label] = d
    opts = TranscriptionOptions(language="en", return_timestamps=False)
    reference = {s: json.loads((w / "scores" / f"distilled_fp32.{s}.json").read_text())["wer"] for s in TEST_SPLITS}
    rows = {}
    for label, d in dirs.items():
        tr = WhisperTranscriber.from_pretrained(d, device="cpu", threads=2)
        row: dict = {"batch_invariant": SCHEMES[VARIANTS[label]].batch_invariant, "wer": {}}
        for split in TEST_SPLITS:
            utts = load_manifest(w / "corpus" / f"{split}.jsonl", require_text=True)
            audios = [load_audio(u.audio) for u in utts]
            batched = [t.text for t in tr.transcribe_arrays(audios, replace(opts, batch_size=8))]
            row["wer"][split] = error_rates([u.text or "" for u in utts], batched).wer
            if split == "test_in_domain":
                alone = [tr.transcribe_arrays([x], replace(opts, batch_size=1))[0].text for x in audios]
                row["changed"] = sum(x != y for x, y in zip(alone, batched))
                row["clips"] = len(audios)
        rows[label] = row
        print(label, row, flush=True)
    specs = [ModelSpec(label, d) for label, d in dirs.items()]
    bench = run_bench(
        w / "corpus" / "test_in_domain.jsonl", specs, repeats=2, threads=2, batch_sizes=(8,), memory="inline"
    )
    p50 = {m.name: 1000 * m.latency_p50 for m in bench.models}
    tput = {t.name: t.clips_per_s for t in bench.throughput}

    env = environment("cpu")
    lines = [
        "# int8 and the batch: the demo's distilled student (issue 46)",
        "",
        f"Command: `python benchmarks/int8_batch_invariance.py {w} --model {a.model}`",
        "",
        f"Machine: {env['cpu']} ({env['cpu_isa']}), {env['cpu_count']} cores; commit {env['commit']}. The demo's fp32 "
        "ONNX export quantised by each scheme; the demo's decoding (language en, no timestamps); WER at batch 8, "
        "WER points over the same model in PyTorch fp32 (the demo's scores) in brackets; one bench run on the "
        "in-domain clips, 2 threads.",
        "",
        "| int8 | batch-invariant by design | in-domain clips whose text changes, batch 1 vs 8 | "
        + " | ".join(TITLES[s] for s in TEST_SPLITS)
        + " | p50 ms (batch 1) | clips/s (batch 8) |",
        "|---|---|--:|" + "--:|" * len(TEST_SPLITS) + "--:|--:|",
    ]
    for label, r in rows.items():
        cells = [f"{100 * r['wer'][s]:.2f}% ({100 * (r['wer'][s] - reference[s]):+.2f})" for s in TEST_SPLITS]
        lines.append(
            f"| {label} | {'yes' if r['batch_invariant'] else 'no'} | {r['changed']} of {r['clips']} | "
            + " | ".join(cells)
            + f" | {p50[label]:.0f} | {tput[label]:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
