"""The prompt tokenizer: normalisation, synonyms and the unknown word, the same in training and serving."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from inference.tiny import MODEL_DIR
from tools.tiny import lexicon


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("A RED CIRCLE ON A WHITE BACKGROUND!", "a red circle on a white background"),
        ("red circle on white.", "red circle on white"),
        ("  a   green\tsquare\n on  black ", "a green square on black"),
        ("a \u201cred\u201d circle \u2014 it\u2019s big", "a red circle it s large"),
        ("a re\u200bd ci\u00adrcle\u200d on \ufeffwhite", "a red circle on white"),
        ("\uff21 \uff32\uff25\uff24 circle", "a red circle"),  # full-width letters (NFKC)
        ("Big gray BALLS in the center", "large grey circles in the centre"),
        ("a tiny violet donut, middle", "a small purple ring centre"),
        ("crimson disk on a silver canvas", "red circle on a grey background"),
        ("ballroom boxer", "ballroom boxer"),  # whole words only
    ],
)
def test_normalises_case_punctuation_unicode_and_synonyms(raw: str, normalised: str) -> None:
    assert lexicon.normalise(raw) == normalised


def test_every_word_has_its_own_token_and_unknown_words_share_one() -> None:
    tokenizer = lexicon.make_tokenizer()
    ids = [tokenizer(w).input_ids for w in lexicon.vocabulary()]
    assert all(len(i) == 3 for i in ids)
    assert len({i[1] for i in ids}) == len(ids)
    unknown = tokenizer.convert_tokens_to_ids(lexicon.UNKNOWN)
    assert tokenizer("zorblax quux").input_ids[1:-1] == [unknown, unknown]
    assert tokenizer("a zorblax red circle").input_ids[1:-1] == tokenizer("a quux red circle").input_ids[1:-1]


def test_shouting_and_punctuation_give_the_same_tokens() -> None:
    tokenizer = lexicon.make_tokenizer()
    plain = tokenizer("a red circle on a white background").input_ids
    assert tokenizer("A RED CIRCLE ON A WHITE BACKGROUND!").input_ids == plain
    assert tokenizer("a \u201cred\u201d  circle,\u200b on a white backdrop...").input_ids == plain


@pytest.mark.parametrize("kind", ["generate", "edit"])
def test_the_bundled_model_ships_the_normaliser(kind: str) -> None:
    """Serving reads prompts with the tokenizer saved next to the weights: it must normalise as training did."""
    shipped = AutoTokenizer.from_pretrained(MODEL_DIR / kind / "tokenizer")
    for prompt in (
        "A Big GRAY Ball\u200b, centered, on a plain white canvas!",
        "\uff21 \u201cred\u201d  box...",
    ):
        assert shipped.backend_tokenizer.normalizer.normalize_str(prompt) == lexicon.normalise(prompt)
    assert (
        shipped("A RED CIRCLE ON A WHITE BACKGROUND!").input_ids
        == shipped("a red circle on a white background").input_ids
    )
    assert shipped.model_max_length == lexicon.MAX_TOKENS
