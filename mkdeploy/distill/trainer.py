"""`mkd train`: the projection-mapping LoRA recipe, top to bottom (nanoGPT style).

Run directory::

    RUN/run.json             teacher, student, manifests, parameter counts, pairing share
    RUN/config.json          the RecipeConfig
    RUN/data/                pseudo-labels (labels.jsonl) and the teacher's cached outputs
    RUN/checkpoints/step-N/  adapter/ (peft format) or decoder.safetensors, heads.safetensors,
                             optimizer.pt, scheduler.pt, rng.pt, state.json; LATEST names the newest
    RUN/metrics.jsonl        one line per step: every loss term, lr, samples/s
    RUN/eval.jsonl           held-out WER at each evaluation
    RUN/summary.json         written when the run reaches max_steps

Runs under ``accelerate launch`` or ``torchrun`` as is: every rank computes the same global batch order
and takes its slice, DDP averages the gradients, rank 0 writes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mkdeploy.audio import SAMPLE_RATE
from mkdeploy.data import load_manifest
from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distill.data import Labeller, TeacherNeeds, pseudo_label_and_cache
from mkdeploy.distill.losses import FitNetLoss, GeodesicLoss, InfoNCELoss, LogitKDLoss, RetentionLoss
from mkdeploy.distill.select import Candidate, Selection, best, choose, interpolate_state, set_lora_scale
from mkdeploy.distill.tokens import shared_vocab
from mkdeploy.errors import MkdError, ModelError, OutputExistsError
from mkdeploy.evaluate import error_rates, wer_by_group
from mkdeploy.fsutil import atomic_write_text
from mkdeploy.models.heads import ProjectionHeads, layer_map
from mkdeploy.models.student import (
    apply_lora,
    count_parameters,
    freeze_all_but_decoder,
    is_pruned,
    load_whisper,
)
from mkdeploy.models.window import (
    FULL_WINDOW_S,
    WindowConfig,
    enable_encoder_windows,
    model_buckets,
    set_model_buckets,
)
from mkdeploy.runtime import TranscriptionOptions, WhisperTranscriber

LATEST = "LATEST"


@dataclass
class TrainArgs:
    """The ``mkd train`` contract."""

    teacher: Path
    student: Path
    train_manifest: Path
    output: Path
    config: RecipeConfig
    eval_manifest: Path | None = None
    resume: bool = False
    force: bool = False
    pseudo_label: str = "missing"
    wer_threshold: float | None = None
    # how --wer-threshold reads the teacher: "generated" transcripts or "forced" along the reference
    teacher_filter: str = "generated"
    # the reference-free filter of pseudo-labels: the teacher's mean token log-probability (None: off)
    min_avg_logprob: float | None = None
    eval_limit: int | None = None
    cache_dir: Path | None = None  # where pseudo-labels and teacher outputs go (default: the run directory)
    labeller: Labeller | None = None  # the teacher's pass elsewhere (Ray actors); None: in this process


class DistillModule(nn.Module):
    """Student and heads in one module, so DDP averages the gradients of both."""

    def __init__(self, student, heads):
        super().__init__()
        self.student = student
        self.heads = heads

    def forward(self, **kw):
        return self.student(**kw)


def batch_indices(step: int, n: int, global_batch: int, seed: int) -> list[int]:
    """The global batch of ``step``: epochs are seeded permutations laid end to end, so the data
    position is the step counter alone (resume needs nothing else, every rank agrees)."""
    start = step * global_batch
    out: list[int] = []
    while len(out) < global_batch:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng(seed + epoch).permutation(n)
        out.extend(int(i) for i in perm[offset : offset + global_batch - len(out)])
    return out


def lr_lambda(config: RecipeConfig) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay to 10% of the peak."""

    def f(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / max(1, config.warmup_steps)
        progress = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _layer_pairs(explicit, n_student: int, n_teacher: int, only: set[int] | None = None) -> list[tuple[int, int]]:
    pairs = [tuple(p) for p in explicit] if explicit else layer_map(n_student, n_teacher)
    for i, j in pairs:
        if not (0 <= i < n_student and 0 <= j < n_teacher):
            raise MkdError(f"layer pair ({i}, {j}) out of range: student has {n_student} layers, teacher {n_teacher}")
    return [p for p in pairs if only is None or p[0] in only]


class Trainer:
    """Builds everything from TrainArgs and runs the loop (see :func:`train`)."""

    def __init__(self, args: TrainArgs, log: Callable[[str], None] = print):
        from accelerate import Accelerator  # heavy (imports its launchers); only a run needs it

        self.args, self.log = args, log
        cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        self.acc = Accelerator(cpu=cpu, mixed_precision="no" if cpu else "bf16")
        self.run = Path(args.output)
        self.stop_requested = False
        self.windows: WindowConfig | None = None
        self.last_eval: dict = {}

    # -- set-up -----------------------------------------------------------------------------------
    def prepare_run_dir(self) -> RecipeConfig:
        run, args = self.run, self.args
        config = args.config
        if run.exists() and any(run.iterdir()):
            if args.resume:
                saved = json.loads((run / "config.json").read_text()) if (run / "config.json").exists() else None
                if saved:
                    # the saved recipe wins; only the step budget may grow on resume
                    config = RecipeConfig(**{**saved, "max_steps": args.config.max_steps}).validate()
            elif args.force:
                if self.acc.is_main_process:
                    shutil.rmtree(run)
            else:
                raise OutputExistsError(
                    f"{run}: a run directory already exists; --resume to continue it or --force to start over"
                )
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            run.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run / "config.json", json.dumps(config.to_dict(), indent=2) + "\n")
        self.acc.wait_for_everyone()
        return config

    def build(self) -> None:
        """Load teacher and student, wrap what trains, run the teacher's pass, make the optimiser."""
        args = self.args
        self.config = cfg = self.prepare_run_dir()
        # both manifests are read before the models: a bad file fails in seconds, not after the teacher's pass
        train_rows = load_manifest(args.train_manifest)
        eval_rows = load_manifest(args.eval_manifest, require_text=True) if args.eval_manifest else []
        self.eval_rows = eval_rows[: args.eval_limit] if eval_rows and args.eval_limit else eval_rows
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        teacher, t_proc = load_whisper(args.teacher)
        student, s_proc = load_whisper(args.student)
        if args.teacher.resolve() == args.student.resolve():
            raise MkdError(
                f"{args.student}: the student is the teacher itself; give a smaller model or prune one "
                "with `mkd student init`"
            )
        teacher.eval().requires_grad_(False)
        pruned = is_pruned(student)
        self._set_windows(student)
        student, trainable_enc = self._trainable(student, pruned)
        base = student.get_base_model() if hasattr(student, "get_base_model") else student
        tc, sc = teacher.config, student.config
        # Only layers that train get aligned: a frozen encoder layer's states can't move (and a pruned
        # student's copied encoder equals the teacher's: nothing to align).
        full_enc = _layer_pairs(
            cfg.encoder_pairs, sc.encoder_layers, tc.encoder_layers, None if cfg.encoder_pairs else trainable_enc
        )
        full_dec = _layer_pairs(cfg.decoder_pairs, sc.decoder_layers, tc.decoder_layers)
        self.enc_pairs, self.dec_pairs = (full_enc, full_dec) if cfg.uses_heads else ([], [])
        heads = self._heads(sc.d_model, tc.d_model)
        self._count(count_parameters(teacher), base, student, heads)
        self.s_proc = s_proc
        self.samples, self.stats = self._teacher_pass(train_rows, teacher, t_proc, base, full_enc, full_dec)
        del teacher  # the cache holds all the loop needs
        # A student whose encoder does not train (no encoder LoRA, no encoder alignment, Whisper's own 30 s
        # window) encodes each clip to the same states every epoch: they are computed once and kept in memory,
        # which leaves the decoder's forward and backward as a step's whole cost.
        self.frozen_encoder = not trainable_enc and not self.enc_pairs and self.windows is None
        self._encoded: dict[int, torch.Tensor] = {}
        self._dev_states: dict[str, Any] = {}
        self._optimise(DistillModule(student, heads))
        if self.acc.is_main_process:
            self._write_run_info(pruned)

    def _set_windows(self, student) -> None:
        """Encoder windows: the recipe's buckets, else the student's own (`mkd student init --encoder-buckets`).
        They go into the student's config, so the merged model, its export and the runtime use them."""
        cfg, sc = self.config, student.config
        own = model_buckets(sc)
        buckets = cfg.encoder_buckets or (list(own) if own else None)
        self.windows = WindowConfig(tuple(buckets)) if buckets else None
        if self.windows:
            set_model_buckets(sc, self.windows.buckets)
            enable_encoder_windows(student)
            self.log(
                f"encoder windows: {', '.join(f'{b} s' for b in self.windows.buckets)} "
                f"({100 * cfg.full_window_prob:.0f}% of batches at 30 s)"
            )

    def _trainable(self, student, pruned: bool):
        """What trains: LoRA (+ heads), or the decoder in full for pruned students. Returns the student and
        the indices of its encoder layers that train. Keeps what the retention term and the interpolation
        toward the start need (LoRA needs no copy: with its adapters disabled the student is its start)."""
        cfg, sc = self.config, student.config
        if cfg.train_mode == "lora":
            student = apply_lora(
                student, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.encoder_lora_layers
            )
            if pruned:
                self.log(
                    "warning: LoRA alone on a pruned student: its kept layers were trained for other neighbours "
                    "(measured: 50% WER vs 11.7% trained in full); consider --train full-decoder"
                )
            trainable_enc = set(range(max(0, sc.encoder_layers - cfg.encoder_lora_layers), sc.encoder_layers))
        else:
            freeze_all_but_decoder(student)
            trainable_enc = set()
        self.start_decoder = (
            None
            if cfg.train_mode == "lora"
            else {k: v.detach().clone() for k, v in student.model.decoder.state_dict().items()}
        )
        self.reference = None
        if cfg.train_mode != "lora" and cfg.w_retain > 0:
            self.reference = copy.deepcopy(student).eval().requires_grad_(False)
        return student, trainable_enc

    def _heads(self, d_student: int, d_teacher: int):
        cfg = self.config
        return ProjectionHeads(
            d_student, d_teacher, self.enc_pairs, self.dec_pairs, cfg.head_rank, cfg.proj_dim, cfg.teacher_map, cfg.seed
        )

    def _count(self, n_teacher: int, base, student, heads) -> None:
        """Parameter counts; refuses a LoRA run above ``max_trainable`` of the teacher."""
        cfg = self.config
        n_trainable = count_parameters(student, trainable_only=True) + heads.trainable_parameters()
        ratio = n_trainable / n_teacher
        self.counts = {
            "teacher": n_teacher,
            "student": count_parameters(base),
            "trainable": n_trainable,
            "heads": heads.trainable_parameters(),
            "trainable_ratio": ratio,
        }
        self.log(
            f"teacher {n_teacher / 1e6:.2f}M params · student {self.counts['student'] / 1e6:.2f}M · trainable "
            f"{n_trainable / 1e3:.1f}k ({heads.trainable_parameters() / 1e3:.1f}k in heads) = "
            f"{100 * ratio:.3f}% of the teacher"
        )
        if cfg.train_mode == "lora" and ratio > cfg.max_trainable:
            raise MkdError(
                f"trainable parameters are {100 * ratio:.2f}% of the teacher, above --max-trainable "
                f"{100 * cfg.max_trainable:.2f}%; lower --lora-r or --encoder-lora-layers, or raise the bound"
            )

    def _teacher_pass(self, rows, teacher, t_proc, base, full_enc, full_dec) -> tuple[list, dict]:
        """Pseudo-labels and the teacher's cached outputs (rank 0 computes, the others read the cache)."""
        args, cfg = self.args, self.config
        self.shared = shared = shared_vocab(self.s_proc.tokenizer, t_proc.tokenizer)
        # The cache always holds what the full recipe reads (all aligned layers and the logits), so runs of
        # different recipes on the same data can share one cache (--cache-dir): the ablation's teacher cost
        # is paid once.
        needs = TeacherNeeds(sorted({j for _, j in full_enc}), sorted({j for _, j in full_dec}), True)
        teacher.to(self.acc.device)
        with self.acc.main_process_first():
            samples, stats = pseudo_label_and_cache(
                rows,
                teacher,
                t_proc,
                self.s_proc,
                base.generation_config,
                shared,
                needs,
                Path(args.cache_dir) if args.cache_dir else self.run,
                language=cfg.language,
                pseudo_label=args.pseudo_label,
                wer_threshold=args.wer_threshold,
                batch_size=cfg.batch_size,
                on_progress=self._label_progress(len(rows)),
                timestamp_prob=cfg.timestamp_prob,
                seed=cfg.seed,
                labeller=args.labeller,
                teacher_filter=args.teacher_filter,
                min_avg_logprob=args.min_avg_logprob,
            )
        teacher.to("cpu")
        self.log(
            f"data: {stats['kept']} clips ({stats['dropped']} dropped, {stats['timestamped']} taught in timestamp "
            f"mode), {100 * stats['paired_share']:.1f}% of token positions paired across tokenizers "
            f"({'identical' if shared.identical else len(shared)} shared vocabulary)"
        )
        return samples, stats

    def _optimise(self, module: DistillModule) -> None:
        cfg = self.config
        params = [p for p in module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.module, self.optimizer, self.scheduler = self.acc.prepare(module, self.optimizer, self.scheduler)
        self.losses = {
            "kd": LogitKDLoss(cfg.tau_kd),
            "geo": GeodesicLoss(),
            "nce": InfoNCELoss(cfg.tau_nce),
            "fit": FitNetLoss(),
            "retain": RetentionLoss(),
        }
        self.step = 0
        self.candidates: list[Candidate] = []

    def _write_run_info(self, pruned: bool) -> None:
        args = self.args
        info = {
            "teacher": str(args.teacher.resolve()),
            "student": str(args.student.resolve()),
            "train_manifest": str(args.train_manifest),
            "eval_manifest": str(args.eval_manifest or ""),
            "pruned_student": pruned,
            "encoder_pairs": self.enc_pairs,
            "decoder_pairs": self.dec_pairs,
            "parameters": self.counts,
            "data": self.stats,
            "world_size": self.acc.num_processes,
        }
        atomic_write_text(self.run / "run.json", json.dumps(info, indent=2) + "\n")

    def _label_progress(self, total: int) -> Callable[[int], None]:
        """Log teacher pseudo-labelling progress every ~10% (it is the longest stage before training)."""
        state = {"done": 0, "next": 0}
        t0 = time.time()

        def tick(n: int) -> None:
            state["done"] += n
            if state["done"] >= state["next"] or state["done"] == total:
                self.log(f"teacher pass: {state['done']}/{total} clips ({time.time() - t0:.0f} s)")
                state["next"] += max(1, total // 10)

        return tick

    # -- checkpoints ------------------------------------------------------------------------------
    def _unwrapped(self) -> DistillModule:
        return self.acc.unwrap_model(self.module)

    def save_checkpoint(self) -> Path | None:
        """Atomic: written to a hidden folder, renamed, then LATEST is replaced; two are kept."""
        self.acc.wait_for_everyone()
        ckdir = self.run / "checkpoints"
        final = ckdir / f"step-{self.step:06d}"
        if self.acc.is_main_process:
            m = self._unwrapped()
            tmp = ckdir / f".step-{self.step:06d}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            if self.config.train_mode == "lora":
                m.student.save_pretrained(tmp / "adapter")
            else:
                dec = {k: v.detach().cpu().contiguous() for k, v in m.student.model.decoder.state_dict().items()}
                save_file(dec, tmp / "decoder.safetensors")
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in m.heads.state_dict().items()}, tmp / "heads.safetensors"
            )
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(
                {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
                tmp / "rng.pt",
            )
            (tmp / "state.json").write_text(
                json.dumps({"step": self.step, "train_mode": self.config.train_mode}) + "\n"
            )
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            latest_tmp = ckdir / f".{LATEST}.tmp"
            latest_tmp.write_text(final.name + "\n")
            os.replace(latest_tmp, ckdir / LATEST)
            keep = {final.name, self.best_checkpoint()}
            for old in sorted(p for p in ckdir.glob("step-*") if p.name not in keep)[:-1]:
                shutil.rmtree(old, ignore_errors=True)
        self.acc.wait_for_everyone()
        return final

    def load_checkpoint(self) -> bool:
        ck = latest_checkpoint(self.run)
        if ck is None:
            return False
        m = self._unwrapped()
        self._load_weights(ck, m)
        m.heads.load_state_dict(load_file(ck / "heads.safetensors"))
        self.optimizer.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=False))
        self.scheduler.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=False))
        rng = torch.load(ck / "rng.pt", weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.step = json.loads((ck / "state.json").read_text())["step"]
        self.log(f"resumed from {ck} (step {self.step})")
        return True

    # -- one step ---------------------------------------------------------------------------------
    def step_indices(self, step: int, global_batch: int) -> list[int]:
        """The global batch of ``step``. With encoder buckets every batch is drawn from one bucket (chosen
        with probability proportional to its clips, members drawn with a seeded generator), so a short
        clip is trained in its own window rather than padded to the longest clip a random batch holds."""
        if not self.windows:
            return batch_indices(step, len(self.samples), global_batch, self.config.seed)
        groups = self.bucket_groups()
        keys = sorted(groups)
        rng = np.random.default_rng([self.config.seed, step, 1])
        bucket = keys[rng.choice(len(keys), p=[len(groups[k]) / len(self.samples) for k in keys])]
        members = groups[bucket]
        return [int(i) for i in rng.choice(members, size=global_batch, replace=len(members) < global_batch)]

    def bucket_groups(self) -> dict[int, list[int]]:
        """Sample indices by the smallest bucket that holds them (computed once)."""
        if getattr(self, "_groups", None) is None:
            self._groups: dict[int, list[int]] = {}
            for i, smp in enumerate(self.samples):
                assert self.windows is not None
                self._groups.setdefault(self.windows.bucket_for(len(smp.audio) / SAMPLE_RATE), []).append(i)
        return self._groups

    def batch_window(self, samples: list, step: int) -> int:
        """Encoder window (s) of a batch: the smallest bucket holding its longest clip; 30 s without buckets
        and, with buckets, for a seeded ``full_window_prob`` share of steps (the same on every rank)."""
        if not self.windows:
            return FULL_WINDOW_S
        if np.random.default_rng([self.config.seed, step]).random() < self.config.full_window_prob:
            return FULL_WINDOW_S
        return self.windows.bucket_for(max(len(s.audio) for s in samples) / SAMPLE_RATE)

    def make_batch(self, idx: list[int], step: int = 0) -> dict:
        fe = self.s_proc.feature_extractor
        samples = [self.samples[i] for i in idx]
        window = self.batch_window(samples, step)
        encoded = self.encoded(idx) if self.frozen_encoder else None
        # frame t of the student's window is frame t of the teacher's 30 s window: the cached teacher
        # states (valid frames only) align with the first frames of any window that holds the clip
        feats = (
            None
            if encoded is not None
            else fe(
                [s.audio for s in samples],
                sampling_rate=SAMPLE_RATE,
                return_tensors="pt",
                padding="max_length",
                max_length=window * SAMPLE_RATE,
                truncation=True,
            ).input_features
        )
        eot = self.s_proc.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        width = max(len(s.student.input_ids) for s in samples)
        ids = torch.full((len(samples), width), eot, dtype=torch.long)
        labels = torch.full((len(samples), width), -100, dtype=torch.long)
        mask = torch.zeros((len(samples), width), dtype=torch.long)
        for b, s in enumerate(samples):
            n = len(s.student.input_ids)
            ids[b, :n] = torch.tensor(s.student.input_ids)
            labels[b, :n] = torch.tensor(s.student.labels)
            mask[b, :n] = 1
        cache = [torch.load(s.cache, weights_only=True) for s in samples]
        # a clip taught in timestamp mode pairs no decoder position: its cached decoder rows are not used
        cache = [
            {k: (v[:0] if k == "logits" or k.startswith("dec_") else v) for k, v in c.items()} if s.timestamped else c
            for s, c in zip(samples, cache)
        ]
        return {
            "features": feats,
            "encoded": encoded,
            "ids": ids,
            "labels": labels,
            "mask": mask,
            "samples": samples,
            "cache": cache,
            "window": window,
        }

    def encoded(self, idx: list[int]) -> torch.Tensor:
        """The frozen encoder's last states for samples ``idx`` (computed on first use, then kept)."""
        todo = sorted({i for i in idx if i not in self._encoded})
        if todo:
            student = self._unwrapped().student
            base = student.get_base_model() if hasattr(student, "get_base_model") else student
            feats = self.s_proc.feature_extractor(
                [self.samples[i].audio for i in todo], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features
            with torch.no_grad():
                states = base.model.encoder(feats.to(self.acc.device)).last_hidden_state.float().cpu()
            self._encoded.update(zip(todo, states))
        return torch.stack([self._encoded[i] for i in idx])

    def _inputs(self, batch: dict) -> dict[str, Any]:
        """The student's encoder input: cached encoder states when the encoder is frozen, else features."""
        dev = self.acc.device
        if batch.get("encoded") is not None:
            return {"encoder_outputs": (batch["encoded"].to(dev),)}
        return {"input_features": batch["features"].to(dev)}

    def compute_losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """Every loss term of the recipe on one batch (weights are applied in :meth:`total`)."""
        cfg, dev = self.config, self.acc.device
        out = self.module(
            **self._inputs(batch),
            decoder_input_ids=batch["ids"].to(dev),
            decoder_attention_mask=batch["mask"].to(dev),
            output_hidden_states=cfg.uses_heads,
        )
        logits = out.logits
        labels = batch["labels"].to(dev)
        terms: dict[str, torch.Tensor] = {
            "ce": F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        }
        if cfg.w_retain > 0:
            terms["retain"] = self.retention(batch, logits, labels)
        samples, cache = batch["samples"], batch["cache"]
        rows = torch.cat([torch.full((len(s.student_pos),), b, dtype=torch.long) for b, s in enumerate(samples)]).to(
            dev
        )
        cols = torch.cat([torch.tensor(s.student_pos, dtype=torch.long) for s in samples]).to(dev)
        # a batch of timestamp-mode clips only has no paired position: its decoder terms are zero (kept in
        # the graph so every step logs the same terms and DDP sees every parameter used)
        zero = logits.sum() * 0.0
        if cfg.uses_kd:
            if len(rows):
                s_logits = logits[rows, cols]
                if not self.shared.identical:
                    s_logits = s_logits[:, self.shared.student_ids.to(dev)]
                t_logits = torch.cat([c["logits"] for c in cache]).to(dev)
                terms["kd"] = self.losses["kd"](s_logits, t_logits)
            else:
                terms["kd"] = zero
        if cfg.uses_heads:
            terms.update(self.alignment(out, cache, rows, cols, zero))
        return terms

    def alignment(self, out, cache: list[dict], rows: torch.Tensor, cols: torch.Tensor, zero: torch.Tensor) -> dict:
        """The projection heads' terms: geodesic (or FitNets' MSE) and InfoNCE between each paired layer's
        projected student points and the teacher's cached points under its frozen map."""
        cfg, dev = self.config, self.acc.device
        heads = self._unwrapped().heads
        Q = heads.teacher
        points = []
        for i, j in self.dec_pairs if len(rows) else []:
            a = heads.heads[f"dec_{i}"](out.decoder_hidden_states[i + 1][rows, cols])
            b = Q(torch.cat([c[f"dec_{j}"] for c in cache]).to(dev).float())
            points.append((a, b))
        for i, j in self.enc_pairs:
            hs = out.encoder_hidden_states[i + 1]
            a = heads.heads[f"enc_{i}"](torch.cat([hs[b, : len(c[f"enc_{j}"])] for b, c in enumerate(cache)]))
            b = Q(torch.cat([c[f"enc_{j}"] for c in cache]).to(dev).float())
            points.append((a, b))
        geo, nce = [], []
        for a, b in points:
            if cfg.recipe == "fitnet":
                geo.append(self.losses["fit"](a, b))
            else:
                geo.append(self.losses["geo"](a, b))
                k = min(cfg.nce_samples, len(a))
                pick = torch.randperm(len(a), device=a.device)[:k]
                nce.append(self.losses["nce"](a[pick], b[pick]))
        anchor = zero + sum(p.sum() * 0.0 for p in heads.parameters() if p.requires_grad)
        terms = {"geo": torch.stack(geo).sum() + anchor if geo else anchor}
        if nce:
            terms["nce"] = torch.stack(nce).sum()
        elif cfg.recipe == "manifold":
            terms["nce"] = anchor
        return terms

    def retention(self, batch: dict, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """KL from the starting student's predictions to the student's, at every labelled position."""
        dev = self.acc.device
        student = self._unwrapped().student
        inputs = self._inputs(batch)
        if batch["window"] != FULL_WINDOW_S:
            # A windowed student starts from a model trained on Whisper's 30 s window: its predictions there,
            # not on the trimmed window it is learning, are what to keep.
            feats = self.s_proc.feature_extractor(
                [s.audio for s in batch["samples"]], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            ).input_features
            inputs = {"input_features": feats.to(dev)}
        kw = {
            **inputs,
            "decoder_input_ids": batch["ids"].to(dev),
            "decoder_attention_mask": batch["mask"].to(dev),
        }
        with torch.no_grad():
            if self.reference is not None:
                start = self.reference.to(dev)(**kw).logits
            else:
                with student.disable_adapter():
                    start = student(**kw).logits
        valid = labels != -100
        return self.losses["retain"](logits[valid], start[valid])

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        cfg = self.config
        weights = {
            "ce": cfg.w_ce,
            "kd": cfg.w_kd,
            "geo": cfg.w_geo,
            "nce": cfg.w_nce(self.step),
            "retain": cfg.w_retain,
        }
        # a CPU 0-dim start adds to tensors on any device
        return sum((weights[k] * v for k, v in terms.items()), torch.zeros(()))

    # -- evaluation -------------------------------------------------------------------------------
    def best_checkpoint(self) -> str:
        """Name of the best trained checkpoint on dev so far ("" when none beats nothing yet)."""
        trained = [c for c in self.candidates if c.step > 0 and c.alpha == 1.0]
        return best(trained).checkpoint if trained else ""

    def evaluate(self, alpha: float = 1.0) -> float | None:
        """Dev WER of the student as it is now; recorded in eval.jsonl and as a selection candidate."""
        if not self.eval_rows or not self.acc.is_main_process:
            return None

        m = self._unwrapped()
        base = m.student.get_base_model() if hasattr(m.student, "get_base_model") else m.student
        was_training = m.training
        m.eval()
        tr = WhisperTranscriber(base, self.s_proc, "torch", str(self.acc.device))
        if self.frozen_encoder:
            # the same dev clips through an encoder that cannot change: encode them once per run
            tr.states_memo = self._dev_states
        res, _ = tr.transcribe_files(
            [r.audio for r in self.eval_rows],
            TranscriptionOptions(
                language=self.config.language, return_timestamps=False, max_new_tokens=self.config.eval_max_new_tokens
            ),
        )
        m.train(was_training)
        by = {t.path: t for t in res}
        hyps = [by[str(r.audio)].text if str(r.audio) in by else "" for r in self.eval_rows]
        rates = error_rates([r.text or "" for r in self.eval_rows], hyps)
        wer, errors = rates.wer, [u.word_errors for u in rates.utterances]
        name = f"step-{self.step:06d}" if self.step else ""
        rec = {
            "step": self.step,
            "alpha": alpha,
            "checkpoint": name,
            "wer": wer,
            "clips": len(self.eval_rows),
            "errors": errors,
        }
        self.candidates.append(Candidate(self.step, alpha if self.step else 0.0, wer, name, errors))
        if self.windows:
            # held-out WER per encoder window: each clip counts in the bucket that encoded it
            buckets = [
                self.windows.bucket_for(by[str(r.audio)].duration if str(r.audio) in by else 0.0)
                for r in self.eval_rows
            ]
            rec["by_bucket"] = wer_by_group([r.text or "" for r in self.eval_rows], hyps, buckets)
        self.last_eval = rec
        with open(self.run / "eval.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        return wer

    def _bucket_line(self) -> str:
        by = self.last_eval.get("by_bucket")
        if not by:
            return ""
        return " (" + ", ".join(f"{b} s: {100 * v['wer']:.2f}% on {v['clips']}" for b, v in by.items()) + ")"

    # -- the loop ---------------------------------------------------------------------------------
    def _on_signal(self, signum, frame):  # noqa: ARG002
        self.stop_requested = True
        self.log("stop requested: finishing this step, saving a checkpoint")

    def fit(self, on_step: Callable[[int, dict], None] | None = None) -> dict:
        """The loop: score dev at step 0, then step, log, checkpoint and score dev until ``max_steps`` or a
        stop signal; at the end choose what merge ships (:meth:`select`)."""
        cfg = self.config
        if self.args.resume:
            self.load_checkpoint()
            self.candidates = self._recorded_candidates()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        first_wer, first_buckets = None, None
        if self.step == 0:
            first_wer = self.evaluate()
            if first_wer is not None:
                self.log(f"held-out WER before training: {100 * first_wer:.2f}%{self._bucket_line()}")
                first_buckets = self.last_eval.get("by_bucket")
        t_start = time.time()
        self.module.train()
        interrupted = False
        try:
            while self.step < cfg.max_steps:
                rec = self.train_step()
                if on_step:
                    on_step(self.step, rec)
                eval_now = bool(cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps)
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps or (eval_now and self.eval_rows):
                    self.save_checkpoint()  # every evaluated step has its checkpoint: it may be the one merged
                if eval_now:
                    wer = self.evaluate()
                    if wer is not None:
                        self.log(f"step {self.step}: held-out WER {100 * wer:.2f}%")
                if self.stop_requested:
                    if self.step % cfg.save_every:
                        self.save_checkpoint()
                    interrupted = True
                    break
        except KeyboardInterrupt:
            self.save_checkpoint()
            interrupted = True
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        summary = {
            "step": self.step,
            "max_steps": cfg.max_steps,
            "interrupted": interrupted,
            "wall_s": round(time.time() - t_start, 1),
            "parameters": self.counts,
            "data": self.stats,
        }
        if interrupted:
            if self.acc.is_main_process and first_wer is not None:
                atomic_write_text(
                    self.run / "summary.json",
                    json.dumps({"wer_before": first_wer, "interrupted": True, "wer_by_bucket_before": first_buckets})
                    + "\n",
                )
            return summary
        return self._finish(summary, first_wer, first_buckets)

    def train_step(self) -> dict:
        """One optimiser step on this rank's slice of the step's global batch; returns its metrics record."""
        cfg, acc = self.config, self.acc
        world, rank = acc.num_processes, acc.process_index
        global_batch = cfg.batch_size * world
        t0 = time.perf_counter()
        batch = self.make_batch(self.step_indices(self.step, global_batch)[rank::world], self.step)
        with acc.autocast():
            terms = self.compute_losses(batch)
            loss = self.total(terms)
        if not torch.isfinite(loss):
            raise MkdError(f"step {self.step}: loss is {loss.item()}; lower --lr (now {cfg.lr})")
        acc.backward(loss)
        acc.clip_grad_norm_([p for p in self.module.parameters() if p.requires_grad], cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        rec = {
            "step": self.step,
            "loss": loss.item(),
            **{k: v.item() for k, v in terms.items()},
            "w_nce": cfg.w_nce(self.step - 1),
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": global_batch / (time.perf_counter() - t0),
            "window_s": batch["window"],
        }
        if acc.is_main_process:
            with open(self.run / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec

    def _finish(self, summary: dict, first_wer: float | None, first_buckets: dict | None) -> dict:
        """After the last step: final dev score, the selection, rank checksums, summary.json."""
        final_wer = self.evaluate()
        summary.update(wer_before=first_wer, wer_after=final_wer)
        if self.windows and final_wer is not None:
            summary.update(
                encoder_buckets=list(self.windows.buckets),
                wer_by_bucket_before=first_buckets,
                wer_by_bucket_after=self.last_eval.get("by_bucket"),
            )
            self.log(f"held-out WER after training: {100 * final_wer:.2f}%{self._bucket_line()}")
        selection = self.select()
        if selection is not None:
            summary.update(selected=asdict(selection.chosen), selection_reason=selection.reason())
        self._write_rank_checksum()
        if self.acc.is_main_process:
            prev = {}
            if (self.run / "summary.json").exists():
                prev = json.loads((self.run / "summary.json").read_text())
            for key in ("wer_before", "wer_by_bucket_before"):
                if summary.get(key) is None and prev.get(key) is not None:
                    summary[key] = prev[key]
            atomic_write_text(self.run / "summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def _recorded_candidates(self) -> list[Candidate]:
        """Candidates evaluated before a resume (eval.jsonl), whose checkpoints still exist."""
        path, out = self.run / "eval.jsonl", []
        for line in path.read_text().splitlines() if path.exists() else []:
            r = json.loads(line)
            if (
                "checkpoint" in r
                and r.get("alpha", 1.0) in (0.0, 1.0)
                and (r["step"] == 0 or (self.run / "checkpoints" / r["checkpoint"]).exists())
            ):
                out.append(
                    Candidate(r["step"], 0.0 if r["step"] == 0 else 1.0, r["wer"], r["checkpoint"], r.get("errors", []))
                )
        return out

    def select(self) -> Selection | None:
        """Choose what merge ships: the best checkpoint on dev, then that checkpoint at the fractions
        ``select_alphas`` of its change; step 0 is a candidate. Writes RUN/selection.json."""
        if not self.eval_rows or not self.acc.is_main_process or not self.candidates:
            return None
        top = self.best_checkpoint()
        if top and self.config.select_alphas:
            m = self._unwrapped()
            self._load_weights(self.run / "checkpoints" / top, m)
            step = int(top.split("-")[1])
            saved_step, self.step = self.step, step
            for alpha in self.config.select_alphas:
                self._scale_change(m, alpha)
                wer = self.evaluate(alpha)
                self.log(f"{top} at {alpha:.2f} of its change: dev WER {100 * (wer or 0):.2f}%")
            self._scale_change(m, 1.0)
            self.step = saved_step
        cfg = self.config
        chosen = choose(self.candidates, cfg.select_confidence, cfg.seed, cfg.select_within_se)
        selection = Selection(
            chosen,
            list(self.candidates),
            str(self.args.eval_manifest),
            len(self.eval_rows),
            cfg.select_confidence,
            cfg.select_within_se,
        )
        selection.save(self.run)
        line = (
            f"selected {selection.chosen.checkpoint or 'the untrained student'} (alpha {selection.chosen.alpha:.2f}): "
        )
        self.log(line + selection.reason())
        if not selection.training_helped:
            self.log("WARNING: training did not help on dev; `mkd merge` will write the untrained student")
        return selection

    def _load_weights(self, ck: Path, m: DistillModule) -> None:
        if self.config.train_mode == "lora":
            from peft import set_peft_model_state_dict  # heavy; only LoRA runs need it
            from peft.utils import load_peft_weights  # heavy; only LoRA runs need it

            set_peft_model_state_dict(m.student, load_peft_weights(str(ck / "adapter"), device="cpu"))
        else:
            m.student.model.decoder.load_state_dict(load_file(ck / "decoder.safetensors"))
        self._trained_decoder = (
            None
            if self.config.train_mode == "lora"
            else {k: v.detach().clone() for k, v in m.student.model.decoder.state_dict().items()}
        )

    def _scale_change(self, m: DistillModule, alpha: float) -> None:
        """Keep ``alpha`` of the loaded checkpoint's change from the start (1.0 restores it)."""
        if self.config.train_mode == "lora":
            set_lora_scale(m.student, alpha)
        else:
            assert self.start_decoder is not None and self._trained_decoder is not None
            m.student.model.decoder.load_state_dict(interpolate_state(self.start_decoder, self._trained_decoder, alpha))

    def _write_rank_checksum(self) -> None:
        """Each rank records a checksum of its trainable weights: after DDP steps they must agree."""
        m = self._unwrapped()
        vec = torch.cat([p.detach().float().flatten().cpu() for p in m.parameters() if p.requires_grad])
        d = self.run / "ranks"
        d.mkdir(exist_ok=True)
        (d / f"rank{self.acc.process_index}.json").write_text(
            json.dumps(
                {
                    "rank": self.acc.process_index,
                    "world": self.acc.num_processes,
                    "step": self.step,
                    "sum": float(vec.double().sum()),
                    "abs_sum": float(vec.double().abs().sum()),
                    "bytes_sha1": hashlib.sha1(vec.numpy().tobytes()).hexdigest(),
                }
            )
            + "\n"
        )


def latest_checkpoint(run: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (None when there is none)."""
    ckdir = Path(run) / "checkpoints"
    latest = ckdir / LATEST
    if latest.exists():
        p = ckdir / latest.read_text().strip()
        if (p / "state.json").exists():
            return p
    done = sorted(p for p in ckdir.glob("step-*") if (p / "state.json").exists()) if ckdir.exists() else []
    return done[-1] if done else None


def train(
    args: TrainArgs, log: Callable[[str], None] = print, on_step: Callable[[int, dict], None] | None = None
) -> dict:
    """Run (or resume) a distillation run; returns the summary."""
    for p, what in ((args.teacher, "teacher"), (args.student, "student")):
        if not Path(p).exists():
            raise ModelError(f"{p}: no such {what} directory")
    trainer = Trainer(args, log)
    trainer.build()
    return trainer.fit(on_step)
