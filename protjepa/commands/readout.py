"""``protjepa readout RUN``: what a run's latent term learned, on held-out masked positions.

Loads the run's newest training checkpoint (or ``--checkpoint``) whole, with its predictors,
and prints, for each latent (JEPA) objective, its cosine beside the mean target's (lift), r2
for the value losses, and the held-out R² of ridge readouts of the target from the student
state, from the predictions and from the residue identity alone; for each MLM objective its
held-out loss beside the unigram entropy (:mod:`protjepa.evaluation.readout`). Writes
``<run>/readout.json``.
"""
from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    from protjepa.commands.arguments import whole_number
    from protjepa.evaluation.readout import SEQUENCES

    parser.add_argument("run", help="a run folder of protjepa train")
    parser.add_argument("--checkpoint", help="a training checkpoint of the run (default: its newest)")
    parser.add_argument("--sequences", type=whole_number(2), default=SEQUENCES,
                        help=f"held-out sequences to read out on, at least 2: a fit half and a scored half "
                             f"(default {SEQUENCES})")
    parser.add_argument("--data-root", help="folder the run's data paths are relative to (default: ../shared/data)")
    parser.add_argument("--trust-code", action="store_true",
                        help="let the run's recipe import the code it names (_component_, plugins); a run folder "
                             "is data: without this flag such a recipe is refused")


def run(args) -> int:
    from protjepa.evaluation.readout import check_run_folder, format_readout, read_out, write_readout
    from protjepa.paths import writable_folder

    check_run_folder(Path(args.run))
    writable_folder(args.run, "run folder (readout.json)")  # before the work, not after it
    result = read_out(args.run, checkpoint=args.checkpoint, sequences=args.sequences, data_root=args.data_root,
                      trust_code=args.trust_code)
    print(format_readout(result))
    print(f"written: {write_readout(result, Path(args.run))}")
    return 0
