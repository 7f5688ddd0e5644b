"""Frozen-encoder evaluation: the probe suite, SCOPe-40 retrieval, zero-shot variant effects,
leakage against the pretraining corpus, and W/L/T comparisons of two probed runs.

Tasks are YAML specs (``specs/*.yaml``, or a user's own files) read by :mod:`.tasks`;
:mod:`.suite` embeds each task's sequences with :mod:`.embed`, fits the probes of
:mod:`.probes` (or scores :mod:`.retrieval` / :mod:`.variant_effect`), and writes
results that :mod:`.compare` reads.
"""
