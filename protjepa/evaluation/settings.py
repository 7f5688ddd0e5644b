"""The settings of a probe suite run that change its numbers (caps, subsampling seed, leakage drops):
what ``protjepa probe``'s flags and an experiment file's ``probe:`` section give. Apart from the suite
that runs them, so that reading an experiment file imports no embedder or probe."""
from __future__ import annotations

from dataclasses import dataclass

from protjepa.errors import ArgumentError, whole_number
from protjepa.evaluation.tasks import Caps, TaskSpec


@dataclass
class SuiteSettings:
    """What changes the numbers, besides the embedder's layer and window (all recorded in the
    results; ``compare`` warns when two runs differ)."""

    fast: bool = False  # use each spec's ``fast`` caps
    max_train: int | None = None  # caps that override the spec's
    max_test: int | None = None
    max_records: int | None = None
    seed: int = 0
    drop_leaked: bool = False  # drop scored sequences found verbatim in the corpus
    drop_identity: float | None = None  # and those with an mmseqs hit at this identity or more

    def __post_init__(self):
        """Checked before any task runs, so that a bad setting is one error, not one per task."""
        for name in ("max_train", "max_test", "max_records"):
            if getattr(self, name) is not None:
                whole_number(getattr(self, name), name)
        whole_number(self.seed, "seed", minimum=0)
        for name in ("fast", "drop_leaked"):
            if not isinstance(getattr(self, name), bool):
                raise ArgumentError(f"{name} {getattr(self, name)!r}: expected True or False")
        identity = self.drop_identity
        if identity is not None and (isinstance(identity, bool) or not isinstance(identity, (int, float))
                                     or not 0 < identity <= 1):
            raise ArgumentError(f"drop_identity {identity!r}: expected a fraction in (0, 1]")

    def caps(self, spec: TaskSpec) -> Caps:
        base = spec.fast if self.fast else Caps()
        return Caps(train=self.max_train or base.train, test=self.max_test or base.test,
                    records=self.max_records or base.records)
