"""The run folder: a new run goes only into a folder that holds nothing foreign (and whose config and metrics,
if any, gpt2lab's own record proves it wrote); a resumed run needs a checkpoint; the files a run writes are
recorded with their SHA-256 (.gpt2lab-run.json). A mixin of training.trainer.Trainer."""

from __future__ import annotations

from pathlib import Path

from .. import checkpoint as ckpt
from ..errors import UserError
from ..files import file_digest, write_json_atomic
from ..formats import BadFile, check, read_json
from ..formats.schemas import RunRecord
from ..metrics.logger import METRICS_FILE, truncate_metrics

RUN_FILES = ("config.json", "device.json", METRICS_FILE, "evaluators.json", ckpt.CHECKPOINTS, "tensorboard", "wandb",
             "profile", "report.md")
RUN_RECORD = ".gpt2lab-run.json"  # what gpt2lab wrote into a run folder, with SHA-256s: its proof of ownership
RECORDED = ("config.json", "device.json", "evaluators.json")


class RunFolder:
    # --- set-up -------------------------------------------------------------------------------------------------

    def _check_run_dir(self, resume: bool) -> list[Path]:
        """The run's complete checkpoints; refuses a folder that is someone else's, or a run that would be mixed."""
        complete = ckpt.complete_checkpoints(self.run_dir)
        candidates = [p for p in complete if ckpt.holds_training_state(p)]  # thinned ones hold weights only
        if not self.dist.is_main:  # rank 0 holds the lock and speaks for the run directory
            return candidates
        metrics = self.run_dir / METRICS_FILE
        if complete and not resume:
            raise UserError(f"{self.run_dir} already holds a run (latest {complete[0].name}); pass --resume to continue "
                            "it or choose a new --out")
        if resume and complete and not candidates:
            raise UserError(f"--resume: every checkpoint in {self.run_dir} was thinned to its weights (gpt2lab thin), so "
                            f"none can be resumed; start a new run from its weights with --init-from {complete[0]}")
        if resume and not candidates:
            stopped = " (it stopped before its first checkpoint: start it again without --resume)" if metrics.is_file() else ""
            raise UserError(f"--resume: {self.run_dir} holds no complete checkpoint to resume from{stopped}")
        if resume and complete[0] != candidates[0]:
            self.echo(f"note: {complete[0].name} holds weights only (thinned); resuming from {candidates[0].name}, the "
                      "newest checkpoint with its training state")
        if not resume:
            self._check_fresh_start(metrics)
        return candidates

    def _check_fresh_start(self, metrics: Path) -> None:
        """A new run goes only into a folder with nothing foreign in it; a run stopped before its first
        checkpoint starts over."""
        foreign = [p.name for p in self.run_dir.iterdir() if p.name not in RUN_FILES and not p.name.startswith(".")
                   and not p.name.endswith(".png")]
        if foreign:
            raise UserError(f"refusing to train into {self.run_dir}: it holds {', '.join(sorted(foreign)[:3])}, which "
                            "gpt2lab did not write; choose an empty or new --out")
        self._check_own_files()
        if metrics.is_file():
            self.echo(f"note: {self.run_dir} holds the metrics of a run stopped before its first checkpoint; starting over")
            truncate_metrics(self.run_dir, 0)

    def _check_own_files(self) -> None:
        """Files with a run's names are overwritten (config) or emptied (metrics) on a fresh start only when the
        folder's record proves gpt2lab wrote them: a user's own config.json or metrics.jsonl is never touched."""
        present = [n for n in (*RECORDED, METRICS_FILE) if (self.run_dir / n).exists()]
        if not present:
            return
        try:
            record = check(read_json(self.run_dir / RUN_RECORD), RunRecord, RUN_RECORD)
            ours = all(file_digest(self.run_dir / n) == record["files"].get(n) for n in RECORDED
                       if (self.run_dir / n).exists())
        except (BadFile, OSError):
            ours = False
        if not ours:
            raise UserError(f"refusing to train into {self.run_dir}: it holds {', '.join(present)}, which gpt2lab's record "
                            f"({RUN_RECORD}) does not show it wrote; choose an empty or new --out")

    def _write_run_files(self) -> None:
        write_json_atomic(self.run_dir / "config.json", self.cfg.to_dict(), "the run config")
        write_json_atomic(self.run_dir / "device.json", self.device_report(), "the device report")
        write_json_atomic(self.run_dir / "evaluators.json", [e.describe() for e in self.evaluators], "the evaluator list")
        write_json_atomic(self.run_dir / RUN_RECORD, {"files": {n: file_digest(self.run_dir / n) for n in RECORDED}},
                          "the run's record of its files")
