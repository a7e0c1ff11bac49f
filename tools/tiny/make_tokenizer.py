"""Regenerate the tiny model's CLIP tokenizer files (vocab.json, merges.txt) from a fixed word list.

Run `python -m tools.tiny.make_tokenizer [OUT_DIR]`. The vocabulary holds every single character we
expect in a prompt (with and without the end-of-word marker `</w>`), the two special tokens, and whole
words for the shapes, colours, positions and edit verbs the tiny model is trained to draw, each with the
chain of merges that builds it. Any other word still tokenizes, character by character.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import string
from pathlib import Path

from inference.tiny import TOKENIZER_DIR

log = logging.getLogger(__name__)

START = "<|startoftext|>"
END = "<|endoftext|>"
EOW = "</w>"
DEFAULT_DIR = TOKENIZER_DIR

CHARACTERS = string.ascii_lowercase + string.digits + ".,!?'\"-:;()&/#+%"

WORDS = [
    "circle",
    "square",
    "triangle",
    "star",
    "heart",
    "ring",
    "diamond",
    "cross",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
    "pink",
    "white",
    "black",
    "grey",
    "gray",
    "brown",
    "cyan",
    "magenta",
    "background",
    "on",
    "a",
    "an",
    "the",
    "small",
    "large",
    "big",
    "left",
    "right",
    "top",
    "bottom",
    "centre",
    "center",
    "middle",
    "one",
    "two",
    "three",
    "of",
    "with",
    "and",
    "in",
    "make",
    "it",
    "turn",
    "change",
    "move",
    "to",
    "shape",
    "shapes",
    "add",
    "remove",
    "sky",
    "photo",
    "style",
    "painting",
    "ghibli",
    "landscape",
    "cat",
    "dog",
]


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """Split `word</w>` the way a BPE tokenizer with these merge ranks does."""
    pieces = [*word[:-1], word[-1] + EOW]
    while len(pieces) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(itertools.pairwise(pieces))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        pieces[i : i + 2] = [pieces[i] + pieces[i + 1]]
    return pieces


def build_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Return the token-to-id map and the ordered merge list.

    Each word is first split with the merges so far, then its pieces are joined left to right by new,
    lower-priority merges, so adding a word never changes how an earlier one tokenizes.
    """
    tokens: list[str] = list(CHARACTERS) + [c + EOW for c in CHARACTERS]
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(WORDS):
        pieces = bpe(word, ranks)
        left = pieces[0]
        for right in pieces[1:]:
            ranks.setdefault((left, right), len(ranks))
            left += right
            tokens.append(left)
    tokens = [*list(dict.fromkeys(tokens)), START, END]
    return {tok: i for i, tok in enumerate(tokens)}, list(ranks)


def write_tokenizer(out_dir: Path) -> None:
    vocab, merges = build_vocab()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, indent=1, ensure_ascii=True) + "\n")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (out_dir / "merges.txt").write_text("\n".join(lines) + "\n")
    log.info("wrote %d tokens and %d merges to %s", len(vocab), len(merges), out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    write_tokenizer(args.out_dir)


if __name__ == "__main__":
    main()
