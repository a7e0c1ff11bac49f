"""Style presets, aspect sizes and autocomplete search."""

import pytest
from pydantic import ValidationError

from bot.core.errors import InvalidInput, UnknownStyle
from bot.core.styles import DEFAULT_ASPECTS, DEFAULT_STYLES, Aspect, StyleBook, StylePreset, size_for


def book() -> StyleBook:
    return StyleBook(list(DEFAULT_STYLES), list(DEFAULT_ASPECTS))


def test_template_wraps_prompt_and_merges_negatives() -> None:
    style = StylePreset(name="ink", prompt="ink drawing of {prompt}", negative="color")
    styled = style.apply("  a fox ", "blurry")
    assert styled.prompt == "ink drawing of a fox"
    assert styled.negative == "color, blurry"


def test_template_without_slot_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"\{prompt\}"):
        StylePreset(name="bad", prompt="no slot here")


def test_unknown_style_names_the_choices() -> None:
    with pytest.raises(UnknownStyle, match=r"no style called `nope`.*photo"):
        book().style("nope")
    photo = book().style("PHOTO")
    assert photo is not None and photo.name == "photo"
    assert book().style(None) is None


def test_unknown_aspect_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="5:1"):
        book().aspect("5:1")


@pytest.mark.parametrize("aspect", DEFAULT_ASPECTS)
def test_sizes_keep_pixel_count_and_multiple_of_64(aspect: Aspect) -> None:
    size = size_for(aspect, 512, 512)
    assert size.width % 64 == 0 and size.height % 64 == 0
    assert 0.75 * 512 * 512 <= size.width * size.height <= 1.25 * 512 * 512
    assert abs(size.width / size.height - aspect.ratio) < 0.2


def test_wide_is_wider_than_tall() -> None:
    wide = size_for(Aspect(name="16:9"), 1024, 1024)
    assert wide.width > wide.height


def test_search_prefers_prefix_and_caps_at_25() -> None:
    styles = [StylePreset(name=f"s{i:02d}") for i in range(40)] + [StylePreset(name="xs1")]
    found = StyleBook(styles, list(DEFAULT_ASPECTS)).search("s")
    assert len(found) == 25
    assert all(s.name.startswith("s") for s in found)
    assert [s.name for s in book().search("cine")] == ["cinematic"]
    assert "photo" in [s.name for s in book().search("focus")]  # matched by description
