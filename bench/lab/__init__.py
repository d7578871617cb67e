"""The CPU quality lab (version 2), in parts: protocol (what is compared, and how), data (the books and their word
statistics), runs (training and records), scoring (checkpoints scored, crossings found), tables (one horizon's
ratios), trend (the ratio's drift with the horizon), precision (fp32 twins: what the lab's bf16 changes), rebuild
(a restored run's final checkpoint, trained again bit for bit) and report (JSON, plot, records).
bench/quality_lab.py is its command line."""

from .data import ngram_losses, prepare_data, split_books
from .precision import fp32_runs, loss_difference, precision_check
from .protocol import (COMMON, CONTENDERS, EVAL_WINDOWS, GOALS, HORIZONS, POINTS, RESOLUTION, ROOT, SEEDS, SHARED,
                       TOKENS_PER_STEP, WHOLE, baseline, compared, parse_run_name, precision_of_name, run_dir, steps_of)
from .report import report
from .runs import (device_of_run, finished, gpt2lab_train, processor_of, restore, run_sets, save_records,
                   threads_of, threads_of_run, train)
from .scoring import checkpoints, crossing, interpolate, reached, refine, replay_every, replay_of, score, step_of_name
from .tables import best_baseline, best_recipe, finished_seeds, horizon_table, horizon_tables, locate, scored_against, target_of
from . import trend

__all__ = ["COMMON", "CONTENDERS", "EVAL_WINDOWS", "GOALS", "HORIZONS", "POINTS", "RESOLUTION", "ROOT", "SEEDS",
           "SHARED", "TOKENS_PER_STEP", "WHOLE", "baseline", "best_baseline", "best_recipe", "checkpoints",
           "compared", "crossing", "device_of_run", "finished", "finished_seeds", "fp32_runs",
           "gpt2lab_train", "horizon_table", "horizon_tables", "interpolate", "locate", "scored_against", "loss_difference", "ngram_losses",
           "parse_run_name", "precision_check", "precision_of_name", "prepare_data", "processor_of",
           "reached", "refine", "replay_every", "replay_of", "report", "restore", "run_dir", "run_sets",
           "save_records", "score", "split_books", "step_of_name", "steps_of", "target_of", "threads_of",
           "threads_of_run", "train", "trend"]
