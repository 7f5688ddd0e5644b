"""``protjepa experiment EXPERIMENT.yaml``: train and probe a list of recipes under one budget,
then write ``report.md``. Finished runs are not retrained and probed runs not re-probed, so
running the same command again resumes an interrupted experiment. An experiment with a
``base:`` trains that base first (even under ``--only``) and starts every variant from it;
every experiment also exports and probes random-init controls (``controls/``)."""
from __future__ import annotations


def configure(parser) -> None:
    parser.add_argument("experiment", help="experiment YAML file, or a shipped one's name (experiments/paper_small)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the runs and their state; train nothing")
    parser.add_argument("--only", action="append", default=[], metavar="VARIANT",
                        help="train and probe only this variant (repeatable; the base, if any, is trained first); "
                        "the report shows every finished run")
    parser.add_argument("--budget", help="replaces the shared budget of every run: 90s, 3min, 2e8tok, 1000steps, "
                        "3e14flop (runs made under another budget are refused, so pair it with --output)")
    parser.add_argument("--output", help="folder of the runs and the report (default: the experiment's output)")
    parser.add_argument("--data-root", help="folder the data paths are relative to (default: ../shared/data)")


def run(args) -> int:
    import signal

    from protjepa.durations import parse_budget
    from protjepa.errors import Interrupted, sigterm_interrupts
    from protjepa.experiment.plan import describe_plan, selected_runs
    from protjepa.experiment.spec import load_experiment

    budget = parse_budget(args.budget) if args.budget is not None else None
    experiment = load_experiment(args.experiment, output=args.output, budget=budget)
    if args.dry_run:  # without the runner: a plan imports no trainer
        print(describe_plan(experiment, selected_runs(experiment, args.only)))
        return 0
    from protjepa.experiment.runner import ExperimentInterrupted, run_experiment

    with sigterm_interrupts() as signals:
        try:
            outcome = run_experiment(experiment, only=args.only, data_root=args.data_root)
        except ExperimentInterrupted as exc:
            raise Interrupted(f"{exc}; run the same command again to resume it: {rerun_command(args)}",
                              signals[-1] if signals else signal.SIGINT) from None
    for what in ("trained", "resumed", "exported", "probed", "read_out", "skipped"):
        labels = getattr(outcome, what)
        if labels:
            print(f"{what.replace('_', ' ')}: {', '.join(labels)}")
    return 0


def rerun_command(args) -> str:
    """This command line: run again, it resumes the experiment where it stopped."""
    import shlex

    words = ["protjepa", "experiment", args.experiment]
    for variant in args.only:
        words += ["--only", variant]
    for flag, value in (("--budget", args.budget), ("--output", args.output), ("--data-root", args.data_root)):
        words += [flag, value] if value is not None else []
    return shlex.join(words)
