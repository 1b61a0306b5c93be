"""The set-up of a `mkd train` run: the contract (:class:`TrainArgs`), the run directory, the models and
what trains in them, the teacher's pass, the optimiser; :func:`setup` returns them as one typed
:class:`TrainState` for the loop in :mod:`mkdeploy.distill.trainer`."""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mkdeploy.data import Utterance, load_manifest
from mkdeploy.distill.batches import BatchSampler, EncoderStates
from mkdeploy.distill.config import RecipeConfig
from mkdeploy.distill.evaluator import DevEvaluator
from mkdeploy.distill.labelling import Labeller, pseudo_label_and_cache
from mkdeploy.distill.objective import Objective
from mkdeploy.distill.records import LabelRules, TeacherNeeds
from mkdeploy.distill.rundir import RunDir
from mkdeploy.distill.teacher_pass import TeacherPass
from mkdeploy.distill.tokens import shared_vocab
from mkdeploy.errors import MkdError
from mkdeploy.models.heads import ProjectionHeads, layer_map
from mkdeploy.models.student import (
    apply_lora,
    count_parameters,
    freeze_all_but_decoder,
    is_pruned,
    load_whisper,
)
from mkdeploy.models.window import WindowConfig, enable_encoder_windows, model_buckets, set_model_buckets
from mkdeploy.options import TranscriptionOptions


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


def base_model(student):
    """The plain Whisper model under a peft wrapper (its adapters stay active in it); a plain model as is."""
    return student.get_base_model() if hasattr(student, "get_base_model") else student


class DistillModule(nn.Module):
    """Student and heads in one module, so DDP averages the gradients of both."""

    def __init__(self, student, heads):
        super().__init__()
        self.student = student
        self.heads = heads

    def forward(self, **kw):
        return self.student(**kw)

    @property
    def base(self):
        """The plain Whisper model under the peft wrapper (adapters stay active in it)."""
        return base_model(self.student)


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


@dataclass
class TrainState:
    """Everything :func:`setup` builds and the loop reads.

    Attributes:
        config: the recipe (the saved one on resume).
        module: student and heads as the accelerator prepared them (DDP-wrapped on several ranks).
        optimizer, scheduler: AdamW and the warm-up/cosine schedule, prepared.
        sampler: draws and builds the batches.
        objective: the recipe's loss terms.
        evaluator: dev scoring (None without --eval).
        counts: parameter counts (teacher, student, trainable, heads, ratio).
        stats: the teacher's pass (rows kept, dropped, timestamped, pairing share).
        start_decoder: a full-decoder run's starting decoder (selection interpolates toward it).
    """

    config: RecipeConfig
    module: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    sampler: BatchSampler
    objective: Objective
    evaluator: DevEvaluator | None
    counts: dict
    stats: dict
    start_decoder: dict | None

    @property
    def frozen_encoder(self) -> bool:
        return self.sampler.encoder_states is not None


def _prepare_run_dir(args: TrainArgs, acc, run: RunDir) -> RecipeConfig:
    """Refuse or wipe an existing run (--resume, --force), save the recipe; returns the recipe in force."""
    config = args.config
    wipe = run.check_free(args.resume, args.force)
    if args.resume and (saved := run.saved_config()):
        # the saved recipe wins; only the step budget may grow on resume
        config = RecipeConfig(**{**saved, "max_steps": args.config.max_steps}).validate()
    if wipe and acc.is_main_process:
        run.wipe()
    acc.wait_for_everyone()
    if acc.is_main_process:
        run.write_config(config.to_dict())
    acc.wait_for_everyone()
    return config


def _windows(cfg: RecipeConfig, student, log) -> WindowConfig | None:
    """Encoder windows: the recipe's buckets, else the student's own (`mkd student init --encoder-buckets`).
    They go into the student's config, so the merged model, its export and the runtime use them."""
    own = model_buckets(student.config)
    buckets = cfg.encoder_buckets or (list(own) if own else None)
    if not buckets:
        return None
    windows = WindowConfig(tuple(buckets))
    set_model_buckets(student.config, windows.buckets)
    enable_encoder_windows(student)
    log(
        f"encoder windows: {', '.join(f'{b} s' for b in windows.buckets)} "
        f"({100 * cfg.full_window_prob:.0f}% of batches at 30 s)"
    )
    return windows


def _trainable(cfg: RecipeConfig, student, pruned: bool, log):
    """What trains: LoRA (+ heads), or the decoder in full for pruned students. Returns the student, the
    indices of its encoder layers that train, the starting decoder (full-decoder runs) and the frozen
    reference for the retention term (LoRA needs no copy: with its adapters disabled it is its start)."""
    sc = student.config
    if cfg.train_mode == "lora":
        student = apply_lora(
            student, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, cfg.encoder_lora_layers
        )
        if pruned and cfg.w_retain > 0:
            # the retention term holds the student near its start, which for a pruned one is the broken
            # model; without it LoRA brought tiny.en cut to 3 decoder layers from 51.0% to 10.7% dev WER
            # (benchmarks/results/issue26_pruned.md, the demo's student)
            log(
                "warning: --w-retain pulls a pruned student back toward its start, the model pruning broke; "
                "use --w-retain 0 (and a higher --lr, e.g. 1e-3), or --train-mode full-decoder"
            )
        trainable_enc = set(range(max(0, sc.encoder_layers - cfg.encoder_lora_layers), sc.encoder_layers))
        return student, trainable_enc, None, None
    freeze_all_but_decoder(student)
    start = {k: v.detach().clone() for k, v in student.model.decoder.state_dict().items()}
    reference = copy.deepcopy(student).eval().requires_grad_(False) if cfg.w_retain > 0 else None
    return student, set(), start, reference


def _counts(cfg: RecipeConfig, n_teacher: int, base, student, heads, log) -> dict:
    """Parameter counts; refuses a LoRA run above ``max_trainable`` of the teacher."""
    n_trainable = count_parameters(student, trainable_only=True) + heads.trainable_parameters()
    ratio = n_trainable / n_teacher
    counts = {
        "teacher": n_teacher,
        "student": count_parameters(base),
        "trainable": n_trainable,
        "heads": heads.trainable_parameters(),
        "trainable_ratio": ratio,
    }
    log(
        f"teacher {n_teacher / 1e6:.2f}M params · student {counts['student'] / 1e6:.2f}M · trainable "
        f"{n_trainable / 1e3:.1f}k ({heads.trainable_parameters() / 1e3:.1f}k in heads) = "
        f"{100 * ratio:.3f}% of the teacher"
    )
    if cfg.train_mode == "lora" and ratio > cfg.max_trainable:
        raise MkdError(
            f"trainable parameters are {100 * ratio:.2f}% of the teacher, above --max-trainable "
            f"{100 * cfg.max_trainable:.2f}%; lower --lora-r or --encoder-lora-layers, or raise the bound"
        )
    return counts


def _label_progress(total: int, log) -> Callable[[int], None]:
    """Log teacher pseudo-labelling progress every ~10% (it is the longest stage before training)."""
    state = {"done": 0, "next": 0}
    t0 = time.time()

    def tick(n: int) -> None:
        state["done"] += n
        if state["done"] >= state["next"] or state["done"] == total:
            log(f"teacher pass: {state['done']}/{total} clips ({time.time() - t0:.0f} s)")
            state["next"] += max(1, total // 10)

    return tick


def setup(args: TrainArgs, acc, run: RunDir, log: Callable[[str], None] = print) -> TrainState:
    """Load teacher and student, wrap what trains, run the teacher's pass, make the optimiser."""
    cfg = _prepare_run_dir(args, acc, run)
    # both manifests are read before the models: a bad file fails in seconds, not after the teacher's pass
    train_rows = load_manifest(args.train_manifest)
    eval_rows: list[Utterance] = load_manifest(args.eval_manifest, require_text=True) if args.eval_manifest else []
    eval_rows = eval_rows[: args.eval_limit] if eval_rows and args.eval_limit else eval_rows
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
    windows = _windows(cfg, student, log)
    student, trainable_enc, start_decoder, reference = _trainable(cfg, student, pruned, log)
    base = base_model(student)
    tc, sc = teacher.config, student.config
    # Only layers that train get aligned: a frozen encoder layer's states can't move (and a pruned
    # student's copied encoder equals the teacher's: nothing to align).
    full_enc = _layer_pairs(
        cfg.encoder_pairs, sc.encoder_layers, tc.encoder_layers, None if cfg.encoder_pairs else trainable_enc
    )
    full_dec = _layer_pairs(cfg.decoder_pairs, sc.decoder_layers, tc.decoder_layers)
    enc_pairs, dec_pairs = (full_enc, full_dec) if cfg.uses_heads else ([], [])
    heads = ProjectionHeads(
        sc.d_model, tc.d_model, enc_pairs, dec_pairs, cfg.head_rank, cfg.proj_dim, cfg.teacher_map, cfg.seed
    )
    counts = _counts(cfg, count_parameters(teacher), base, student, heads, log)

    # The teacher's pass: pseudo-labels and cached outputs (rank 0 computes, the others read the cache).
    # The cache always holds what the full recipe reads (all aligned layers and the logits), so runs of
    # different recipes on the same data can share one cache (--cache-dir): the ablation's teacher cost
    # is paid once.
    shared = shared_vocab(s_proc.tokenizer, t_proc.tokenizer)
    needs = TeacherNeeds(sorted({j for _, j in full_enc}), sorted({j for _, j in full_dec}), True)
    teacher.to(acc.device)
    with acc.main_process_first():
        tp = TeacherPass(
            teacher,
            t_proc,
            s_proc,
            base.generation_config,
            shared,
            needs,
            Path(args.cache_dir) if args.cache_dir else run.path,
            cfg.language,
        )
        samples, stats = pseudo_label_and_cache(
            train_rows,
            tp,
            LabelRules(
                args.pseudo_label,
                args.wer_threshold,
                args.teacher_filter,
                args.min_avg_logprob,
                cfg.timestamp_prob,
                cfg.seed,
            ),
            batch_size=cfg.batch_size,
            on_progress=_label_progress(len(train_rows), log),
            labeller=args.labeller,
        )
    del teacher, tp  # the cache holds all the loop needs
    log(
        f"data: {stats['kept']} clips ({stats['dropped']} dropped, {stats['timestamped']} taught in timestamp "
        f"mode), {100 * stats['paired_share']:.1f}% of token positions paired across tokenizers "
        f"({'identical' if shared.identical else len(shared)} shared vocabulary)"
    )

    # A student whose encoder does not train (no encoder LoRA, no encoder alignment, Whisper's own 30 s
    # window) encodes each clip to the same states every epoch: they are computed once and kept in memory,
    # which leaves the decoder's forward and backward as a step's whole cost.
    frozen = not trainable_enc and not enc_pairs and windows is None
    sampler = BatchSampler(samples, s_proc, cfg.seed, windows, cfg.full_window_prob)
    if frozen:
        sampler.encoder_states = EncoderStates(
            lambda f: base.model.encoder(f.to(acc.device)).last_hidden_state, sampler.features
        )
    objective = Objective(cfg, shared, enc_pairs, dec_pairs, sampler.features, reference)
    evaluator = None
    if eval_rows:
        options = TranscriptionOptions(
            language=cfg.language, return_timestamps=False, max_new_tokens=cfg.eval_max_new_tokens
        )
        evaluator = DevEvaluator(eval_rows, s_proc, options, acc.device, windows, frozen)

    module = DistillModule(student, heads)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    module, optimizer, scheduler = acc.prepare(module, optimizer, scheduler)
    if acc.is_main_process:
        run.write_info(
            {
                "teacher": str(args.teacher.resolve()),
                "student": str(args.student.resolve()),
                "train_manifest": str(args.train_manifest),
                "eval_manifest": str(args.eval_manifest or ""),
                "pruned_student": pruned,
                "encoder_pairs": enc_pairs,
                "decoder_pairs": dec_pairs,
                "parameters": counts,
                "data": stats,
                "world_size": acc.num_processes,
            }
        )
    return TrainState(cfg, module, optimizer, scheduler, sampler, objective, evaluator, counts, stats, start_decoder)
