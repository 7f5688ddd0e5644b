"""``protjepa base RUN FOLDER``: a finished MLM-only run's encoder as a pretrained base that travels
and that experiments continue from (``base: {checkpoint: FOLDER}``): its weights in bf16, in parts of
at most ``--part-mib`` beside a manifest of their SHA-256 digests, with the run's recipe and metrics
and ``base.json`` (the held-out MLM loss of the weights as written, beside the unigram entropy; the
training, the machine, the run's provenance). :mod:`protjepa.experiment.bases`.
"""
from __future__ import annotations


def configure(parser) -> None:
    from protjepa.commands.arguments import number, whole_number
    from protjepa.experiment.bases import HELD_OUT_SEQUENCES, PART_BYTES
    from protjepa.parts import MiB

    parser.add_argument("run", help="a finished run folder of protjepa train, MLM-only")
    parser.add_argument("folder", help="the base folder to write (it must not exist)")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16",
                        help="the weights' type on disk (default bf16: half the bytes)")
    parser.add_argument("--part-mib", type=number(0, above=True), default=PART_BYTES / MiB,
                        help=f"largest part in MiB (default {PART_BYTES / MiB:g}: under the 16 MiB a file that a "
                             "device machine returns)")
    parser.add_argument("--sequences", type=whole_number(2), default=HELD_OUT_SEQUENCES,
                        help=f"held-out sequences the MLM loss is measured on (default {HELD_OUT_SEQUENCES})")
    parser.add_argument("--data-root", help="folder the run's data paths are relative to (default: ../shared/data)")
    parser.add_argument("--trust-code", action="store_true",
                        help="let the run's recipe import the code it names (_component_, plugins:); a run folder is "
                             "data, so without this flag such a recipe is refused")


def run(args) -> int:
    import torch

    from protjepa.experiment.bases import make_base
    from protjepa.parts import MiB

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    record = make_base(args.run, args.folder, dtype=dtype, part_bytes=max(1, int(args.part_mib * MiB)),
                       sequences=args.sequences, data_root=args.data_root, trust_code=args.trust_code)
    held, weights, training = record["held_out"], record["weights"], record["training"]
    print(f"base: {args.folder}: {weights['parameters']:,} parameters in {weights['dtype']}, {weights['bytes']:,} "
          f"bytes in {weights['parts']} part(s), sha256 {weights['sha256'][:16]}...")
    print(f"trained: {training['steps']} steps, {training['tokens']:,} tokens, budget {training['budget']}"
          f"; GPUs: {', '.join(record['machine'].get('gpus') or ['none'])}")
    under = held["under_unigram"]
    print(f"held-out MLM loss {held['mlm_loss']:.4f} nats on {held['sequences']} sequences; the unigram entropy "
          f"{held['unigram_entropy']:.4f}: {abs(under):.4f} nats {'under' if under >= 0 else 'over'} it")
    return 0
