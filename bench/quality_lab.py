"""The CPU quality lab, version 2 (bench/lab/: its protocol and parts): tokens and wall time a recipe needs to
reach a baseline tuned for the same horizon, scored on held-out books that no choice was made on.

Usage (project root, ../shared beside it; each run is pinned to --cpus with one thread per CPU named: `--cpus 1`
is one thread on CPU 1, as every 1M and 4M run; `--cpus 0,1` two threads, to bring a 16M run within a few hours):
  python bench/quality_lab.py run baseline-lr0.0012 --horizon 4M
  python bench/quality_lab.py queue baseline-lr0.0012@4M speedrun-cpu@4M     # one after another
  python bench/quality_lab.py score RUN/checkpoints/step_N ...   # score ahead of `report`, on --cpus
  python bench/quality_lab.py report        # a horizon with no runs here keeps the newest earlier report's table
  python bench/quality_lab.py thin [RUN ...] # finished runs: crossings resolved and records saved to the results,
                                           # then checkpoints but the last to weights
  python bench/quality_lab.py thin RUN --final-only  # a full disk: the final checkpoint alone (scores stay cached)
  python bench/quality_lab.py restore      # a new machine: the committed runs' records back into the work folder
  python bench/quality_lab.py rebuild RUN ... --cpus 1  # a restored one-thread run trained again bit for bit on its
                                           # processor, checked against its records: its final checkpoint kept
  python bench/quality_lab.py queue baseline-lr0.0012@1M --precision fp32  # a CPU without bf16 units: fp32 twins
                                           # of lab runs, reported beside them (what bf16 changes), never in the tables
Results: bench/results/quality_lab_<date>.json (and the runs' metrics under bench/results/quality_lab_runs/).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.lab import ngram_losses, report, restore, score, threads_of, train  # noqa: E402
from bench.lab.protocol import SEEDS, HORIZONS, parse_run_name  # noqa: E402
from bench.lab.runs import finished, save_run  # noqa: E402
from bench.lab.tables import locate, scored_against, target_of  # noqa: E402


def run_folders(work: Path, names: list[str]) -> list[Path]:
    """The lab's run folders named by their names or their paths; ValueError for one that is not in the lab (a
    path taken for a name once read as a run that had not finished), before anything is done."""
    runs = work / "runs"
    folders = [runs / Path(n).name for n in names]
    unknown = [n for n, f in zip(names, folders) if not f.is_dir()]
    if unknown:
        known = ", ".join(sorted(p.name for p in runs.glob("*"))[:3]) or "none yet"
        raise ValueError(f"no lab run {unknown[0]!r} in {runs}; name a run folder there (e.g. {known})")
    return folders


def final_only(run: Path) -> int:
    """A finished run whose crossing is resolved, down to its final (newest) checkpoint: the others, and every replay's
    checkpoints, deleted (for a disk too small to keep them all). What scoring found stays in the scoring caches
    and the records (as for a run restored on a new machine), so `report` gives the same table; what goes is the
    chance to score those checkpoints on other text. The run's folder lock is taken first. Returns bytes freed."""
    from gpt2lab.checkpoint import complete_checkpoints
    from gpt2lab.files import FolderLock

    def size(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and f.stat().st_nlink == 1)

    lock = FolderLock(run, "the run directory", remedy="prune it once that run has finished").acquire()
    try:
        doomed = complete_checkpoints(run)[1:] + [r / "checkpoints" for r in sorted(run.glob("replays/*"))
                                                     if (r / "checkpoints").is_dir()]
        freed = 0
        for path in doomed:
            freed += size(path)
            shutil.rmtree(path)
        return freed
    finally:
        lock.release()


def thin(work: Path, names: list[str], cpus: str, final: bool = False, records: Path | None = None) -> None:
    """`gpt2lab thin` on finished runs (all, or the run folders named): every checkpoint but the final one, and
    every replay's, reduced to its weights, which is all scoring needs (a third of the disk). A contender's
    crossing is resolved first (scored, and replayed when its bracket is too wide), since a replay needs the
    training state of the checkpoint it starts from; a contender whose horizon has no target yet is left whole.
    A baseline's horizon has its target scored first (the best baseline's finals). A crossing that later moves (a
    new baseline in the sweep) past a thinned checkpoint keeps its coarse bracket. Each run so resolved has its
    records saved into `records` at once (the committed results folder), not at the next `report`: a session cut
    off before it commits leaves them as changes in the tree, while the work folder is lost with the machine."""
    from gpt2lab.commands.thin import thin_run

    for run in sorted(work.glob("runs/*")) if not names else run_folders(work, names):
        try:
            name, horizon, _ = parse_run_name(run.name)
        except ValueError as exc:
            print(f"{exc}; left as it is")
            continue
        if not finished(run, horizon):
            print(f"{run.name}: not finished; left whole (its next crossing may need a replay)")
            continue
        if not name.startswith("baseline-"):
            against, target, base_runs = scored_against(work, horizon, cpus)
            if target is None:
                print(f"{run.name}: no baseline has finished at {horizon}, so its crossing is not known; left whole")
                continue
            # a plan shorter than its target is read between its kept checkpoints, as its table row reads it
            locate(work, run, target, base_runs, cpus, resolve=against == horizon)
        else:
            target_of(work, horizon, cpus)
        if records is not None:
            save_run(run, records / run.name)
        freed = thin_run(run, keep=1)["freed_bytes"] if (run / "checkpoints").is_dir() else 0
        freed += sum(thin_run(replay, keep=0)["freed_bytes"] for replay in sorted(run.glob("replays/*"))
                     if (replay / "checkpoints").is_dir())
        if final:
            freed += final_only(run)
        print(f"{run.name}: {freed / 2**30:.2f} GiB freed", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["run", "queue", "report", "ngram", "score", "thin", "restore", "rebuild"])
    parser.add_argument("names", nargs="*", help="run: a contender; queue: NAME@HORIZON[@SEED] ...")
    parser.add_argument("--horizon", default="1M", choices=list(HORIZONS))
    parser.add_argument("--seed", type=int, default=SEEDS[0])
    parser.add_argument("--work", default=str(ROOT / "runs" / "quality_lab"))
    parser.add_argument("--cpus", default="1")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp32"],
                        help="run, queue: fp32 trains a check of what the lab's bf16 changes, in a folder of its own "
                             "(NAME-HORIZON-seedSEED-fp32); it never enters the lab's tables, only their fp32 check")
    parser.add_argument("--no-report", action="store_true", help="run, queue: train only (report later, elsewhere)")
    parser.add_argument("--final-only", action="store_true",
                        help="thin: keep only each finished run's final checkpoint (its crossing resolved first; what "
                             "was scored stays in its caches), for a disk too small for every evaluation point's")
    args = parser.parse_args()
    try:
        threads_of(args.cpus)  # a typo in --cpus stops here (one line, exit 2), before anything runs
    except ValueError as bad:
        parser.error(str(bad))
    work = Path(args.work)
    if args.what in ("run", "queue") and args.precision == "bf16":
        from gpt2lab.errors import UserError
        from gpt2lab.runtime import resolve_runtime

        try:  # gpt2lab's own refusal, before a queue starts, not in the first run's log
            resolve_runtime("cpu", "bf16")
        except UserError as exc:
            sys.exit(f"quality_lab: the lab trains in bf16 (its runs compare only so); run it on a CPU with AVX512-BF16 "
                     f"or AMX ({exc}); --precision fp32 trains a check of what bf16 changes instead")
    if args.what == "run":
        for name in args.names:
            train(work, name, args.horizon, args.seed, args.cpus, args.precision)
    elif args.what == "queue":
        for item in args.names:
            name, horizon, *seed = item.split("@")
            train(work, name, horizon, int(seed[0]) if seed else SEEDS[0], args.cpus, args.precision)
    elif args.what == "ngram":
        print(ngram_losses(work))
        return
    elif args.what == "score":  # score checkpoints ahead of `report` (RUN/checkpoints/step_N ...), on --cpus
        for path in args.names:
            print(path, score(work, Path(path), args.cpus), flush=True)
        return
    elif args.what == "thin":
        try:  # a typo in a run's name stops here (one line, exit 2), before any run is thinned
            run_folders(work, args.names)
        except ValueError as bad:
            parser.error(str(bad))
        thin(work, args.names, args.cpus, args.final_only, ROOT / "bench" / "results" / "quality_lab_runs")
        return
    elif args.what == "rebuild":  # restored runs' final checkpoints, trained again and checked bit for bit
        from bench.lab.rebuild import RebuildError, check_rebuildable, final_checkpoint, rebuild

        try:  # every run checked before any trains: a wrong processor or a typo stops here, not hours later
            folders = run_folders(work, args.names) if args.names else []
            for run in folders:
                if final_checkpoint(run) is None:
                    check_rebuildable(run, args.cpus)
        except ValueError as bad:
            parser.error(str(bad))
        if not folders:
            parser.error("rebuild: name the runs to rebuild (their folders under the work folder's runs/)")
        for run in folders:
            try:
                print(f"{run.name}: final checkpoint {rebuild(work, run, args.cpus)}", flush=True)
            except RebuildError as bad:
                sys.exit(f"quality_lab: {bad}")
        return
    elif args.what == "restore":  # a new machine: the committed runs' records into the work folder
        names = restore(work)
        print(f"restored {len(names)} runs' records into {work / 'runs'}" + "".join(f"\n  {n}" for n in names))
        return
    if not args.no_report:
        report(work, args.cpus)


if __name__ == "__main__":
    main()
