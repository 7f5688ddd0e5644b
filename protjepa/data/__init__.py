"""Data: FASTA reading, masking, collating (padded or packed) and the streaming corpus."""
from protjepa.data.collate import Collator, batch_of_sequences, encode_sequences, first_fit_decreasing
from protjepa.data.corpus import (
    CorpusError,
    FastaCorpus,
    fixed_batches,
    held_out_batches,
    holdout_score,
    in_split,
    make_corpus,
    split_sequences,
)
from protjepa.data.fasta import FastaError, FastaReader, FastaRecord, write_fasta
from protjepa.data.masking import mask_tokens

__all__ = [
    "Collator", "batch_of_sequences", "encode_sequences", "first_fit_decreasing",
    "CorpusError", "FastaCorpus", "fixed_batches", "held_out_batches", "holdout_score", "in_split", "make_corpus",
    "split_sequences",
    "FastaError", "FastaReader", "FastaRecord", "write_fasta",
    "mask_tokens",
]
