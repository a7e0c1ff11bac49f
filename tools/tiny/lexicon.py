"""The bundled tiny model's prompt tokenizer: text normalisation, a synonym map and a whole-word vocabulary.

The tokenizer is a plain `tokenizers` pipeline saved as `tokenizer.json` next to the model, so every
`from_pretrained` of the pipeline (the engine, the evaluation, a user's own script) normalises prompts the
same way the training captions were normalised; nothing in brushfire's runtime has to remember to do it.
Its normaliser, in order: Unicode NFKC; format characters (zero-width spaces and joiners, BOM, soft
hyphen, bidi marks) removed; curly quotes and apostrophes to straight ones; lower case; every run of
characters that are neither letters nor digits to one space; synonyms rewritten to the word the model was
trained on ("center" -> "centre", "ball" -> "circle", "gray" -> "grey", ...); spaces collapsed and stripped.
The model is word level: every word of `vocabulary()` has one token, and any other word becomes the one
unknown token `<|unk|>`, in training and in serving alike (training captions carry made-up filler words for
exactly that reason, so the model learns that an unknown word changes nothing).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

START = "<|startoftext|>"
END = "<|endoftext|>"
UNKNOWN = "<|unk|>"
MAX_TOKENS = 32

# Word -> the word the model is trained on. Training captions use TRAIN_SYNONYMS; the evaluation's held-out
# paraphrases use HELD_OUT_SYNONYMS too, which no training caption ever contains (tests/tiny/test_phrasing.py
# samples training captions and checks). Both go through the same rewrite, so a held-out synonym checks that
# serving normalises as training did, on words the training text never had.
TRAIN_SYNONYMS: dict[str, str] = {
    "gray": "grey",
    "center": "centre",
    "middle": "centre",
    "big": "large",
    "huge": "large",
    "little": "small",
    "tiny": "small",
    "ball": "circle",
    "disc": "circle",
    "box": "square",
    "donut": "ring",
    "rhombus": "diamond",
    "plus": "cross",
    "violet": "purple",
    "turquoise": "cyan",
    "backdrop": "background",
    "color": "colour",
    "colored": "coloured",
    "recolor": "recolour",
}
HELD_OUT_SYNONYMS: dict[str, str] = {
    "disk": "circle",
    "orb": "circle",
    "block": "square",
    "doughnut": "ring",
    "hoop": "ring",
    "lozenge": "diamond",
    "crimson": "red",
    "scarlet": "red",
    "aqua": "cyan",
    "silver": "grey",
    "emerald": "green",
    "giant": "large",
    "enormous": "large",
    "mini": "small",
    "upper": "top",
    "lower": "bottom",
    "canvas": "background",
    "centered": "centre",
    "centred": "centre",
}
SYNONYMS: dict[str, str] = {**TRAIN_SYNONYMS, **HELD_OUT_SYNONYMS}

# Words of the grammar and of the training phrasings; each gets its own token. Any other word is unknown.
GRAMMAR_WORDS = (
    "circle square triangle star heart ring diamond cross "
    "circles squares triangles stars hearts rings diamonds crosses "
    "red orange yellow green blue purple pink white black grey brown cyan "
    "small large left right top bottom centre side "
    "a an the one two three of on in at with and to it its them background colour coloured "
    "make turn change move add remove recolour paint set put shift use give want should be is please "
    "draw create show me generate render image picture i shape shapes "
    "high quality simple flat clean detailed minimal plain bright solid icon style single "
    "also next too take away delete get rid"
)


def vocabulary() -> list[str]:
    """Every word with a token of its own, in a fixed order (ids follow it)."""
    return sorted(set(GRAMMAR_WORDS.split()))


def _synonym_rule() -> normalizers.Normalizer:
    """One regex rewrite per synonym, whole words only, applied after case and punctuation are gone."""
    rules = []
    for word in sorted(SYNONYMS, key=len, reverse=True):
        target = SYNONYMS[word]
        rules.append(normalizers.Replace(Regex(rf"\b{re.escape(_plain(word))}\b"), target))
        if not word.endswith("s"):
            plural = _plural_of(target)
            rules.append(normalizers.Replace(Regex(rf"\b{re.escape(_plain(word))}(e?s)\b"), plural))
    return normalizers.Sequence(rules)


def _plain(word: str) -> str:
    """A synonym as it looks after punctuation became spaces ("colour's" -> "colour s")."""
    return re.sub(r"[^a-z0-9]+", " ", word).strip()


def _plural_of(word: str) -> str:
    return word + ("es" if word.endswith(("s", "x")) else "s")


def normaliser() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [
            normalizers.NFKC(),
            # Zero-width spaces and joiners, BOM, soft hyphen, bidi controls: invisible, so never a word break.
            normalizers.Replace(Regex(r"\p{Cf}+"), ""),
            normalizers.Replace(Regex(r"[\u2018\u2019\u201a\u201b\u2032\u02bc]"), "'"),
            normalizers.Replace(Regex(r"[\u201c\u201d\u201e\u201f\u2033]"), '"'),
            normalizers.Lowercase(),
            normalizers.Replace(Regex(r"[^\p{L}\p{N}]+"), " "),
            _synonym_rule(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
        ]
    )


def build_backend() -> Tokenizer:
    words = vocabulary()
    vocab = {START: 0, END: 1, UNKNOWN: 2} | {w: i + 3 for i, w in enumerate(words)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNKNOWN))
    tokenizer.normalizer = normaliser()
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, 0), (END, 1)]
    )
    return tokenizer


def make_tokenizer() -> PreTrainedTokenizerFast:
    """The prompt tokenizer as transformers wraps it (what the pipelines load with `from_pretrained`)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=build_backend(),
        bos_token=START,
        eos_token=END,
        pad_token=END,
        unk_token=UNKNOWN,
        model_max_length=MAX_TOKENS,
    )


@functools.cache
def _cached_normaliser() -> normalizers.Normalizer:
    return normaliser()


def normalise(text: str) -> str:
    """The text the tokenizer reads a prompt as (for tests and the model card's examples)."""
    return _cached_normaliser().normalize_str(text)


@functools.cache
def _known_words() -> frozenset[str]:
    return frozenset(vocabulary())


def known(word: str) -> bool:
    """Whether a normalised word has a token of its own."""
    return word in _known_words()


def add_normaliser(pipeline_dir: Path) -> None:
    """Give a trained pipeline's own tokenizer this normaliser, keeping its vocabulary and token ids.

    The folder's tokenizer is saved back as `tokenizer.json` and `model_index.json` names the generic
    tokenizers class, since `CLIPTokenizer` rebuilds its own normaliser from vocab.json and merges.txt.
    """
    folder = pipeline_dir / "tokenizer"
    old = AutoTokenizer.from_pretrained(folder)
    backend = old.backend_tokenizer
    backend.normalizer = normaliser()
    new = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=old.bos_token,
        eos_token=old.eos_token,
        pad_token=old.pad_token,
        unk_token=old.unk_token,
        model_max_length=old.model_max_length,
    )
    for file in folder.iterdir():
        file.unlink()
    new.save_pretrained(folder)
    index_file = pipeline_dir / "model_index.json"
    index = json.loads(index_file.read_text())
    index["tokenizer"] = ["transformers", type(new).__name__]
    index_file.write_text(json.dumps(index, indent=2) + "\n")
    log.info("%s: the tokenizer now normalises prompts", pipeline_dir)
