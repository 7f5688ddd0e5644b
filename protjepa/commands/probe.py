"""``protjepa probe CHECKPOINT``: score a frozen encoder on the probe suite.

CHECKPOINT is an encoder (a native or Hugging Face ESM folder, a fair-esm ``.pt``), a
run folder of ``protjepa train`` (its final export; the run names the pretraining corpus
for the leakage check) or one of its training checkpoints (``<run>/checkpoints/ckpt-0.500.pt``). Writes ``results.json`` and ``results.md`` to ``--out``
(default ``<run>/probe/``, or ``./probe/<checkpoint name>``).
"""
from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    from protjepa.commands.arguments import number, whole_number

    parser.add_argument("checkpoint", nargs="?", help="encoder file/folder, or a run folder")
    parser.add_argument("--tasks", help="comma-separated task names, or 'all' (default: the default suite)")
    parser.add_argument("--spec", action="append", default=[], metavar="PATH",
                        help="extra task spec (YAML file or folder of them); repeatable")
    parser.add_argument("--list", action="store_true", help="list the tasks and exit")
    parser.add_argument("--data-root", help="data folder (default: $PROTJEPA_DATA or ../shared/data)")
    parser.add_argument("--layer", default="last", help="last | half | a depth (0 = embeddings)")
    parser.add_argument("--fast", action="store_true", help="subsample each task to its spec's fast caps")
    parser.add_argument("--max-train", type=whole_number(1), help="at most N training records per task")
    parser.add_argument("--max-test", type=whole_number(1), help="at most N test records per task")
    parser.add_argument("--max-records", type=whole_number(1), help="at most N records (cross-validation, retrieval)")
    parser.add_argument("--seed", type=whole_number(0), default=0, help="subsampling seed")
    parser.add_argument("--corpus", nargs="+", metavar="FASTA",
                        help="pretraining corpus for the leakage check (default: a run's recipe data)")
    parser.add_argument("--drop-leaked", action="store_true", help="drop scored sequences found in the corpus")
    parser.add_argument("--drop-identity", type=number(0, above=True, maximum=1), metavar="FRACTION",
                        help="also drop scored sequences with an mmseqs hit of this identity (needs mmseqs)")
    parser.add_argument("--out", help="output folder")
    parser.add_argument("--cache-dir", help="embedding cache (default: $PROTJEPA_CACHE/embeddings or "
                                            "~/.cache/protjepa/embeddings)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="embed under bf16 autocast; auto (default): on a GPU, and on a CPU where native "
                             "bf16 is faster")
    parser.add_argument("--batch-tokens", type=whole_number(1),
                        help="tokens per embedding batch, padding included (default: 2048 on a CPU, 16384 on a GPU)")
    parser.add_argument("--max-length", type=whole_number(1), default=1022,
                        help="residues per window for longer sequences")
    parser.add_argument("--trust-code", action="store_true",
                        help="let the encoder's encoder.yaml (or its run's recipe) import the code it names "
                             "(_component_, plugins); an export or a run folder is data: without this flag such "
                             "a file is refused")
    parser.add_argument("--threads", type=whole_number(1),
                        help="torch CPU threads (default: torch's; as a recipe's train.threads)")


def run(args) -> int:
    from protjepa.errors import UserError
    from protjepa.evaluation.tasks import task_registry

    registry = task_registry(args.spec)
    if args.list:
        for name in registry.names():
            spec = registry.get(name)
            print(f"{name:<24} {spec.type:<27} {spec.metric:<16} {'' if spec.default else '(not default) '}"
                  f"{spec.description}")
        return 0
    if not args.checkpoint:
        raise UserError("probe: give a CHECKPOINT (or --list)")
    specs = registry.select(args.tasks.split(",") if args.tasks else None)

    from protjepa.card import CARD, write_card
    from protjepa.devices import resolve_device
    from protjepa.export import load_encoder, resolve_checkpoint
    from protjepa.evaluation.embed import DEFAULT_CACHE, Embedder
    from protjepa.evaluation.leakage import Corpus, run_corpus
    from protjepa.evaluation.suite import SuiteSettings, run_probe_suite, write_results
    from protjepa.paths import data_root, resolve, writable_folder
    from protjepa.precision import choose_bf16

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    root = data_root(args.data_root)
    device = resolve_device(args.device, "--device")
    encoder_path, run_dir = resolve_checkpoint(args.checkpoint)
    if args.out:
        out = Path(args.out)
    elif run_dir:  # a training checkpoint's results beside the final export's, not over them
        out = run_dir / "probe" / encoder_path.stem if encoder_path.is_file() else run_dir / "probe"
    else:
        out = Path("probe") / Path(args.checkpoint).stem
    if args.corpus:
        corpus = Corpus([resolve(root, p) for p in args.corpus])
    else:
        corpus = Corpus(run_corpus(run_dir, root)) if run_dir else None
    if corpus is None and (args.drop_leaked or args.drop_identity is not None):
        raise UserError("probe: --drop-leaked / --drop-identity need the corpus: give --corpus (or a run folder)")
    print(f"encoder: {encoder_path}")
    notes: list[str] = []
    encoder = load_encoder(encoder_path, trust_code=args.trust_code, notes=notes)
    for note in notes:
        print(f"note: {note}")
    layer = int(args.layer) if args.layer.lstrip("-").isdigit() else args.layer
    bf16, precision = choose_bf16(args.precision, device.type, "--precision")
    embedder = Embedder(encoder, layer, device=device, batch_tokens=args.batch_tokens, max_length=args.max_length,
                        cache_dir=None if args.no_cache else Path(args.cache_dir) if args.cache_dir else DEFAULT_CACHE,
                        bf16=bf16)
    writable_folder(out, "probe output (--out)")  # once the encoder loaded, and not after the tasks have run
    settings = SuiteSettings(fast=args.fast, max_train=args.max_train, max_test=args.max_test,
                             max_records=args.max_records, seed=args.seed, drop_leaked=args.drop_leaked,
                             drop_identity=args.drop_identity)
    print(f"{len(specs)} tasks on {device}, layer {embedder.depth} of {encoder.num_layers}, {precision}"
          + (", fast caps" if args.fast else "") + (f"; leakage against {len(corpus.paths)} corpus file(s)"
                                                    if corpus else "; no corpus: leakage not checked"))
    results, examples = run_probe_suite(specs, embedder, root, settings, corpus,
                                        log=lambda line: print(line, flush=True))
    results["checkpoint"] = str(encoder_path)
    json_path, md_path = write_results(results, out, examples)
    print(f"wrote {json_path} and {md_path}")
    if run_dir is not None and out == run_dir / "probe" and (encoder_path / CARD).is_file():
        print(f"updated {write_card(run_dir, encoder_path)}")  # the card shows the final export's probes
    return 1 if any(r.get("error") for r in results["tasks"].values()) else 0
