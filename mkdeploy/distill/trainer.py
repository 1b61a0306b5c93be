"""`mkd train`: the projection-mapping LoRA recipe, top to bottom (nanoGPT style).

:func:`~mkdeploy.distill.setup.setup` loads the models, runs the teacher's pass and returns a
:class:`~mkdeploy.distill.setup.TrainState`; :class:`Trainer` runs the loop over it (:meth:`Trainer.fit`):
score dev at step 0, then step, log, checkpoint and score dev until ``max_steps`` or a stop signal, and
choose on dev what `mkd merge` ships. The parts live beside it: the run directory's files in
:mod:`~mkdeploy.distill.rundir`, checkpoints in :mod:`~mkdeploy.distill.checkpoints`, batches in
:mod:`~mkdeploy.distill.batches`, the loss terms in :mod:`~mkdeploy.distill.objective`, dev scoring in
:mod:`~mkdeploy.distill.evaluator`, the choice in :mod:`~mkdeploy.distill.select`.

Runs under ``accelerate launch`` or ``torchrun`` as is: every rank computes the same global batch order
and takes its slice, DDP averages the gradients, rank 0 writes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from mkdeploy.distill.checkpoints import CheckpointInfo
from mkdeploy.distill.evaluator import DevScore
from mkdeploy.distill.rundir import RunDir
from mkdeploy.distill.select import Candidate, Selection, best, choose, selectable
from mkdeploy.distill.setup import DistillModule, TrainArgs, setup
from mkdeploy.errors import MkdError, ModelError

__all__ = ["TrainArgs", "Trainer", "train"]


# -- the loop -------------------------------------------------------------------------------------------


class Trainer:
    """Runs the loop over the state :func:`setup` builds (see :func:`train`).

    Args:
        args: the run's contract.
        log: where progress lines go.
    """

    def __init__(self, args: TrainArgs, log: Callable[[str], None] = print):
        from accelerate import Accelerator  # heavy (imports its launchers); only a run needs it

        self.args, self.log = args, log
        cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
        self.acc = Accelerator(cpu=cpu, mixed_precision="no" if cpu else "bf16")
        self.run = RunDir(args.output)
        self.state = setup(args, self.acc, self.run, log)
        self.config = self.state.config
        self.step = 0
        self.candidates: list[Candidate] = []  # every dev score so far: what selection chooses among
        self.last_eval: DevScore | None = None
        self.trained_decoder: dict | None = None  # a loaded full-decoder checkpoint (selection scales it)
        self.stop_requested = False

    @property
    def inner(self) -> DistillModule:
        return self.acc.unwrap_model(self.state.module)

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Atomic (:class:`~mkdeploy.distill.checkpoints.CheckpointStore`); the best on dev is kept too."""
        self.acc.wait_for_everyone()
        store = self.run.checkpoints
        if self.acc.is_main_process:
            s, m = self.state, self.inner
            store.save(
                self.step,
                self.config.train_mode,
                m.student,
                m.heads,
                s.optimizer,
                s.scheduler,
                keep=self.selectable_checkpoints(),
            )
        self.acc.wait_for_everyone()
        return store.path(self.step)

    def resume(self) -> None:
        """Continue from the newest checkpoint, with the dev scores recorded before it."""
        ck = self.run.checkpoints.latest()
        if ck is not None:
            m, s = self.inner, self.state
            self.trained_decoder = self.run.checkpoints.load_weights(ck, m.student)
            self.step = self.run.checkpoints.load_training_state(ck, m.heads, s.optimizer, s.scheduler)
            self.log(f"resumed from {ck} (step {self.step})")
        self.candidates = self._recorded_candidates()

    def _recorded_candidates(self) -> list[Candidate]:
        """Candidates evaluated before a resume (eval.jsonl), whose checkpoints still exist."""
        out = []
        for r in self.run.eval_records():
            if (
                "checkpoint" in r
                and r.get("alpha", 1.0) in (0.0, 1.0)
                and (r["step"] == 0 or (self.run.checkpoints.dir / r["checkpoint"]).exists())
            ):
                out.append(
                    Candidate(r["step"], 0.0 if r["step"] == 0 else 1.0, r["wer"], r["checkpoint"], r.get("errors", []))
                )
        return out

    # -- evaluation -------------------------------------------------------------------------------
    def best_checkpoint(self) -> str:
        """Name of the best trained checkpoint on dev so far ("" when none beats nothing yet)."""
        trained = [c for c in self.candidates if c.step > 0 and c.alpha == 1.0]
        return best(trained).checkpoint if trained else ""

    def selectable_checkpoints(self) -> set[str]:
        """Checkpoints the dev selection may still ship (:func:`~mkdeploy.distill.select.selectable`), kept
        when newer ones are saved."""
        return selectable(self.candidates, self.config.select_within_se)

    def evaluate(self, step: int, alpha: float = 1.0) -> DevScore | None:
        """Dev WER of the student as it is now, as the weights of ``step`` at ``alpha`` of their change;
        recorded in eval.jsonl and as a selection candidate. None without dev clips or off rank 0."""
        ev = self.state.evaluator
        if ev is None or not self.acc.is_main_process:
            return None
        score = ev.score(self.inner.base, step, alpha)
        self.candidates.append(score.candidate())
        self.last_eval = score
        self.run.append_eval(score.record())
        return score

    def _bucket_line(self) -> str:
        by = self.last_eval.by_bucket if self.last_eval else None
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
            self.resume()
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        first: DevScore | None = None
        if self.step == 0:
            first = self.evaluate(0)
            if first is not None:
                self.log(f"held-out WER before training: {100 * first.wer:.2f}%{self._bucket_line()}")
        t_start = time.time()
        self.state.module.train()
        interrupted = False
        try:
            while self.step < cfg.max_steps:
                rec = self.train_step()
                if on_step:
                    on_step(self.step, rec)
                eval_now = bool(cfg.eval_every and self.step % cfg.eval_every == 0 and self.step < cfg.max_steps)
                has_dev = self.state.evaluator is not None
                if self.step % cfg.save_every == 0 or self.step == cfg.max_steps or (eval_now and has_dev):
                    self.save_checkpoint()  # every evaluated step has its checkpoint: it may be the one merged
                if eval_now and (score := self.evaluate(self.step)) is not None:
                    self.log(f"step {self.step}: held-out WER {100 * score.wer:.2f}%")
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
            "parameters": self.state.counts,
            "data": self.state.stats,
        }
        if interrupted:
            if self.acc.is_main_process and first is not None:
                self.run.write_summary(
                    {"wer_before": first.wer, "interrupted": True, "wer_by_bucket_before": first.by_bucket}
                )
            return summary
        return self._finish(summary, first)

    def train_step(self) -> dict:
        """One optimiser step on this rank's slice of the step's global batch; returns its metrics record."""
        cfg, acc, s = self.config, self.acc, self.state
        world, rank = acc.num_processes, acc.process_index
        global_batch = cfg.batch_size * world
        t0 = time.perf_counter()
        batch = s.sampler.make(s.sampler.indices(self.step, global_batch)[rank::world], self.step)
        with acc.autocast():
            terms = s.objective.compute(s.module, self.inner, batch, acc.device)
            loss = s.objective.total(terms, self.step)
        if not torch.isfinite(loss):
            raise MkdError(f"step {self.step}: loss is {loss.item()}; lower --lr (now {cfg.lr})")
        acc.backward(loss)
        acc.clip_grad_norm_([p for p in s.module.parameters() if p.requires_grad], cfg.grad_clip)
        s.optimizer.step()
        s.scheduler.step()
        s.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        rec = {
            "step": self.step,
            "loss": loss.item(),
            **{k: v.item() for k, v in terms.items()},
            "w_nce": cfg.w_nce(self.step - 1),
            "lr": s.scheduler.get_last_lr()[0],
            "samples_per_s": global_batch / (time.perf_counter() - t0),
            "window_s": batch.window,
        }
        if acc.is_main_process:
            self.run.append_metrics(rec)
        return rec

    def _finish(self, summary: dict, first: DevScore | None) -> dict:
        """After the last step: final dev score, the selection, rank checksums, summary.json."""
        final = self.evaluate(self.step)
        summary.update(wer_before=first.wer if first else None, wer_after=final.wer if final else None)
        if self.state.sampler.windows and final is not None:
            summary.update(
                encoder_buckets=list(self.state.sampler.windows.buckets),
                wer_by_bucket_before=first.by_bucket if first else None,
                wer_by_bucket_after=final.by_bucket,
            )
            self.log(f"held-out WER after training: {100 * final.wer:.2f}%{self._bucket_line()}")
        selection = self.select()
        if selection is not None:
            summary.update(selected=asdict(selection.chosen), selection_reason=selection.reason())
        vec = torch.cat([p.detach().float().flatten().cpu() for p in self.inner.parameters() if p.requires_grad])
        self.run.write_rank_checksum(self.acc.process_index, self.acc.num_processes, self.step, vec)
        if self.acc.is_main_process:
            prev = self.run.summary() or {}
            for key in ("wer_before", "wer_by_bucket_before"):
                if summary.get(key) is None and prev.get(key) is not None:
                    summary[key] = prev[key]
            self.run.write_summary(summary)
        return summary

    def select(self) -> Selection | None:
        """Choose what merge ships: the best checkpoint on dev, then that checkpoint at the fractions
        ``select_alphas`` of its change; step 0 is a candidate. Writes RUN/selection.json."""
        if self.state.evaluator is None or not self.acc.is_main_process or not self.candidates:
            return None
        top, cfg, store = self.best_checkpoint(), self.config, self.run.checkpoints
        if top and cfg.select_alphas:
            student = self.inner.student
            ck = store.dir / top
            trained = store.load_weights(ck, student)
            step = CheckpointInfo.read(ck).step
            for alpha in cfg.select_alphas:
                store.scale(student, alpha, self.state.start_decoder, trained)
                score = self.evaluate(step, alpha)
                self.log(f"{top} at {alpha:.2f} of its change: dev WER {100 * (score.wer if score else 0):.2f}%")
            store.scale(student, 1.0, self.state.start_decoder, trained)
        chosen = choose(self.candidates, cfg.select_confidence, cfg.seed, cfg.select_within_se)
        ev = self.state.evaluator
        selection = Selection(
            chosen,
            list(self.candidates),
            str(self.args.eval_manifest),
            len(ev.rows),
            cfg.select_confidence,
            cfg.select_within_se,
        )
        selection.save(self.run.path)
        line = (
            f"selected {selection.chosen.checkpoint or 'the untrained student'} (alpha {selection.chosen.alpha:.2f}): "
        )
        self.log(line + selection.reason())
        if not selection.training_helped:
            self.log("WARNING: training did not help on dev; `mkd merge` will write the untrained student")
        return selection


def train(
    args: TrainArgs, log: Callable[[str], None] = print, on_step: Callable[[int, dict], None] | None = None
) -> dict:
    """Run (or resume) a distillation run; returns the summary."""
    for p, what in ((args.teacher, "teacher"), (args.student, "student")):
        if not Path(p).exists():
            raise ModelError(f"{p}: no such {what} directory")
    return Trainer(args, log).fit(on_step)
