"""PAWS-like role swaps: expected swaps, same words, skipped forms, both directions of a pair."""

import re
from collections import Counter

import numpy as np
import pytest

from logitkit.matching import PairSet, role_swap, swap_set


@pytest.mark.parametrize(
    ("sentence", "swapped"),
    [
        ("A man is slicing a cucumber.", "A cucumber is slicing a man."),
        ("A woman is slicing an onion.", "An onion is slicing a woman."),
        ("Two dogs are chasing a cat.", "A cat is chasing two dogs."),
        ("A cat is chasing two dogs.", "Two dogs are chasing a cat."),
        ("The men were watching the game", "The game was watching the men"),
        ("A polar bear is running towards a group of walruses.",
         "A group of walruses is running towards a polar bear."),
        ("A line of scooters is parking in the middle of a street.",
         "The middle of a street is parking in a line of scooters."),
        ("A blonde child is swinging on a tire swing.",
         "A tire swing is swinging on a blonde child."),
        ("A man is playing a guitar on a stage.", "A guitar is playing a man on a stage."),
        ("Some guy is sitting on a couch watching TV.",
         "A couch is sitting on some guy watching TV."),
    ],
)
def test_role_swap_exchanges_subject_and_object(sentence, swapped):
    assert role_swap(sentence) == swapped


@pytest.mark.parametrize(
    "sentence",
    [
        "A man is kissing a woman.",  # symmetric verb: same meaning after the swap
        "A man is talking with a woman.",  # "with" object: symmetric too
        "A man and a woman are dancing.",  # no subject phrase followed by an auxiliary
        "A man plays a guitar.",  # no auxiliary + -ing verb
        "Obama met Putin on Tuesday.",  # no determiner phrases
        "A man is running.",  # no object
        "A man is talking to a man.",  # the same phrase twice
        "",
    ],
)
def test_role_swap_skips_sentences_it_cannot_swap_safely(sentence):
    assert role_swap(sentence) is None


def _words(sentence):
    return Counter(re.findall(r"[a-z0-9'-]+", sentence.lower()))


def test_every_swap_keeps_the_same_words_but_changes_their_order():
    sentences = [
        "A man is cutting up a cucumber.", "A woman is peeling a potato with a knife.",
        "The dog is running through a field.", "Two black dogs are playing in a grassy plain.",
        "A little boy is playing a keyboard.", "An oriental lady is cutting a carrot into pieces.",
        "His hand is raising the man.", "The girls are watching the birds.",
    ]
    for sentence in sentences:
        swapped = role_swap(sentence)
        assert swapped is not None, sentence
        assert swapped != sentence
        # the same words up to the auxiliary's number (is/are, was/were)
        auxiliaries = {"is", "are", "was", "were"}
        assert (Counter({w: c for w, c in _words(swapped).items() if w not in auxiliaries})
                == Counter({w: c for w, c in _words(sentence).items() if w not in auxiliaries}))
        assert swapped[0].isupper() or not sentence[0].isupper()


def test_swap_set_takes_similar_pairs_in_both_directions():
    pairs = PairSet(
        ["A man is slicing a cucumber.", "A dog is chasing a ball.", "A man plays guitar."],
        ["A man is cutting a cucumber.", "A cat is chasing a mouse.", "A man is playing a flute."],
        np.array([4.6, 1.0, 3.0]),
    )
    swaps = swap_set(pairs)
    # pair 0 (4.6): both sentences swap; pair 1 (1.0) is not similar; pair 2 (3.0): only b swaps
    assert swaps.kept == ["A man is slicing a cucumber.", "A man is cutting a cucumber.",
                          "A man plays guitar."]
    assert swaps.paraphrase == ["A man is cutting a cucumber.", "A man is slicing a cucumber.",
                                "A man is playing a flute."]
    assert swaps.swapped == ["A cucumber is cutting a man.", "A cucumber is slicing a man.",
                             "A flute is playing a man."]
    assert swaps.gold.tolist() == [4.6, 4.6, 3.0]
    assert len(swap_set(pairs, min_score=4.0)) == 2
    sub = swaps.subset([2, 0])
    assert sub.kept == ["A man plays guitar.", "A man is slicing a cucumber."]
    assert sub.gold.tolist() == [3.0, 4.6]


def test_real_stsb_test_split_gives_a_usable_swap_set(shared_data):
    from logitkit.matching import load_stsb

    test = load_stsb(shared_data / "stsb" / "stsbenchmark.tsv.gz")["test"]
    swaps = swap_set(test)
    assert len(swaps) >= 80
    assert (swaps.gold >= 3).all()
    for paraphrase, swapped in zip(swaps.paraphrase, swaps.swapped, strict=True):
        assert swapped != paraphrase
