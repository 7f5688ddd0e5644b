"""Training-step throughput, measured side by side in one process.

A *row* is one thing timed per batch: a whole training step of a recipe (forward,
backward, gradient clipping, the trainer's AdamW step, EMA update where the recipe has a
teacher), the no-grad target pass alone, an encoder forward (or forward and backward)
under one attention backend, or the peer: ``transformers.EsmForMaskedLM`` of the same
size, batch and dtype, trained the same way. Rows read fixed batches drawn from the real
corpus (padded, or packed under the same token budget), built and moved to the device
before any clock starts, so only the step is timed.

Every repetition runs every row once on the same batches (the next ones of the pool: by
default each batch is timed once), in forward order on even repetitions and in reverse
order on odd ones (ABBA), so drift in the machine's load hits the rows compared alike. A
ratio is the median over repetitions of the ratio within each repetition. Throughput
counts non-padding tokens (residues plus <cls>/<eos>).

Modules: ``config`` (suites, sizes), ``batches``, ``steps`` (what a row runs), ``rows``,
``timing``, ``ratios``, ``peak``, ``checks`` (GPU only), ``suite`` (one run end to end),
``report``; ``embedding`` (the probe embedder against transformers'), ``curves`` (cost
as crop, batch and loader work grow) and ``recipes`` (any recipe's step: ``--recipe``) are runs
of their own.
"""
