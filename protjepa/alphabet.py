"""The ESM alphabet (33 tokens, in fair-esm's order) and the tokeniser."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

ESM_TOKENS = (
    "<cls>", "<pad>", "<eos>", "<unk>",
    "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F", "Y", "M", "H", "W", "C",
    "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)
# The 20 standard amino acids: what "a random amino acid" means in 80/10/10 masking.
STANDARD_AMINO_ACIDS = "LAGVSERTIDPKQNFYMHWC"


class UnknownResidueError(ValueError):
    pass


@dataclass(frozen=True)
class Alphabet:
    tokens: tuple[str, ...] = ESM_TOKENS
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    _letters: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "index", {t: i for i, t in enumerate(self.tokens)})
        object.__setattr__(self, "_letters", self.letter_table())

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def cls_idx(self) -> int:
        return self.index["<cls>"]

    @property
    def pad_idx(self) -> int:
        return self.index["<pad>"]

    @property
    def eos_idx(self) -> int:
        return self.index["<eos>"]

    @property
    def unk_idx(self) -> int:
        return self.index["<unk>"]

    @property
    def mask_idx(self) -> int:
        return self.index["<mask>"]

    @property
    def special_ids(self) -> tuple[int, ...]:
        return tuple(i for i, t in enumerate(self.tokens) if t.startswith("<"))

    @property
    def standard_ids(self) -> torch.Tensor:
        return torch.tensor([self.index[a] for a in STANDARD_AMINO_ACIDS])

    def letter_table(self) -> torch.Tensor:
        """A 256-entry byte -> id table (-1 for letters outside the alphabet)."""
        table = torch.full((256,), -1, dtype=torch.long)
        for token, idx in self.index.items():
            if len(token) == 1:
                table[ord(token)] = idx
        return table

    def encode(self, sequence: str, *, add_special: bool = True) -> torch.Tensor:
        """Residue letters -> ids, wrapped as <cls> ... <eos>. Raises on unknown letters."""
        raw = torch.frombuffer(bytearray(sequence.upper().encode("ascii", "replace")), dtype=torch.uint8)
        ids = self._letters[raw.long()]
        bad = (ids < 0).nonzero()
        if len(bad):
            pos = int(bad[0])
            raise UnknownResidueError(f"unknown residue letter {sequence[pos]!r} at position {pos + 1}")
        if add_special:
            ids = torch.cat([ids.new_tensor([self.cls_idx]), ids, ids.new_tensor([self.eos_idx])])
        return ids

    def decode(self, ids) -> str:
        return "".join(self.tokens[int(i)] for i in ids if int(i) not in self.special_ids)


ESM_ALPHABET = Alphabet()
