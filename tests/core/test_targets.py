"""Class names resolve to one class or are refused: never the first of several silently."""

from __future__ import annotations

import numpy as np
import pytest

from xai_bridge.errors import ParameterError, XaiBridgeError
from xai_bridge.targets import resolve_targets


def _resolve(spec: object, names: list[str]) -> list[list[int]]:
    return resolve_targets(spec, 1, None, names, len(names)).tolist()  # type: ignore[arg-type]


def _refusal(spec: object, names: list[str]) -> str:
    with pytest.raises(ParameterError) as err:
        _resolve(spec, names)
    assert isinstance(err.value, XaiBridgeError) and "\n" not in str(err.value)
    return str(err.value)


@pytest.fixture(scope="module")
def imagenet_descriptions() -> list[str]:
    """ImageNet's class names as Hugging Face id2label and timm spell them (134 and 517 are both 'crane')."""
    data = pytest.importorskip("timm.data")
    info = data.ImageNetInfo()
    return [info.index_to_description(i) for i in range(1000)]


def test_imagenet_crane_is_refused_with_both_indices(imagenet_descriptions: list[str]) -> None:
    message = _refusal("crane", imagenet_descriptions)
    assert message == "targets: 'crane' names 2 classes: 134 'crane', 517 'crane'; pass the index of the one you mean"


def test_imagenet_unique_names_and_synonyms_still_resolve(imagenet_descriptions: list[str]) -> None:
    assert _resolve("tabby", imagenet_descriptions) == [[281]]  # synonym of "tabby, tabby cat"
    assert _resolve("Tabby Cat", imagenet_descriptions) == [[281]]
    assert _resolve("tiger cat", imagenet_descriptions) == [[282]]
    assert _resolve([["goldfish", 517]], imagenet_descriptions) == [[1, 517]]


def test_synonym_shared_by_two_labels_lists_both(imagenet_descriptions: list[str]) -> None:
    # "maillot" is 638's whole name and a synonym of 639 ("maillot, tank suit"): the whole name wins
    assert _resolve("maillot", imagenet_descriptions) == [[638]]
    panther = [i for i, d in enumerate(imagenet_descriptions) if "panther" in [s.strip() for s in d.split(",")]]
    assert len(panther) == 2
    message = _refusal("panther", imagenet_descriptions)
    assert message.startswith("targets: 'panther' names 2 classes: ")
    for i in panther:
        assert f"{i} {imagenet_descriptions[i]!r}" in message


def test_exact_case_wins_over_case_insensitive() -> None:
    names = ["cat", "Cat", "dog"]
    assert _resolve("cat", names) == [[0]]
    assert _resolve("Cat", names) == [[1]]
    assert (
        _refusal("CAT", names) == "targets: 'CAT' names 2 classes: 0 'cat', 1 'Cat'; pass the index of the one you mean"
    )
    assert _resolve("DOG", names) == [[2]]


def test_duplicate_exact_names_are_refused() -> None:
    assert "names 2 classes: 0 'a', 2 'a'" in _refusal("a", ["a", "b", "a"])


def test_synonym_tiers_exact_before_case_folded() -> None:
    names = ["big cat, Lion", "sea lion, lion"]
    assert _resolve("Lion", names) == [[0]]  # the exact synonym is unique
    assert _resolve("lion", names) == [[1]]
    assert "names 2 classes" in _refusal("LION", names)


def test_many_candidates_are_counted_not_all_listed() -> None:
    message = _refusal("x", ["x"] * 9)
    assert message.count("'x'") == 7 and "and 3 more" in message  # the spec and the first six candidates


def test_unknown_name_suggests_close_ones() -> None:
    assert _refusal("dgo", ["cat", "dog"]) == "targets: no class named 'dgo'. Did you mean 'dog'?"


def test_names_in_per_image_lists_are_checked_too() -> None:
    targets = resolve_targets([["cat", "dog"], ["Cat", 2]], 2, None, ["cat", "Cat", "dog"], 3)
    assert np.array_equal(targets, [[0, 2], [1, 2]])
    with pytest.raises(ParameterError, match="'CAT' names 2 classes"):
        resolve_targets([["CAT"], [0]], 2, None, ["cat", "Cat", "dog"], 3)
