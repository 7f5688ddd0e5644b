"""The paper's experiment as one command: train a list of recipes under one budget, data and
seed list, probe every final encoder, and write a Markdown report with W/L/T against the
baseline, the budget each run used, the collapse monitors, seed noise, a learning control
against random-init encoders, and plots. An optional base run (continued pretraining) is
trained first and every variant starts from its weights.

:mod:`.spec` reads the experiment file, :mod:`.runner` trains and probes (resumable, cached),
:mod:`.records` reads back what the runs left on disk, and :mod:`.report` and :mod:`.plots`
write ``report.md`` and its PNGs from those records.
"""
from protjepa.experiment.spec import Experiment, ExperimentError, load_experiment

__all__ = ["Experiment", "ExperimentError", "load_experiment"]
