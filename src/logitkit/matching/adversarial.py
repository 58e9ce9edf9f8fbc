"""PAWS-like adversarial pairs built from scored pairs: swap who does what to whom.

PAWS (Zhang, Baldridge and He, NAACL 2019) shows that matchers which mostly count shared words
fail on pairs with the same words in another order ("Flights from New York to Florida" vs
"Flights from Florida to New York"). Here such pairs are made from the similar pairs of STS-B:
for a pair (a, b) with gold score >= ``min_score``, the subject and the object of b are swapped
when b has the form ``<det> <words> is|are|was|were <verb>ing [<preposition>] <det> <words> ...``
(the captions of STS-B mostly do), e.g.

    "A man is slicing a cucumber."  ->  "A cucumber is slicing a man."

The swap keeps every word (a bag-of-words matcher sees the same sentence) but makes the pair a
non-paraphrase. Each swap is evaluated beside its own paraphrase: ``(a, b)`` (label similar) and
``(a, swap(b))`` (label not similar), and likewise with the roles of a and b exchanged. Verbs
whose subject and object can trade places without changing the meaning (kissing, fighting, ...)
and objects after "with" are skipped. The rules are heuristics without a part-of-speech tagger:
a few swaps read oddly ("A field is playing in two zebras"), none keeps the meaning.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from logitkit.matching.evaluate import PairSet, resolve_cutoff

DETERMINERS = frozenset({
    "a", "an", "the", "one", "two", "three", "four", "five", "some", "several", "many", "his",
    "her", "their", "its", "this", "that", "these", "those", "another", "my", "your", "our",
})
SINGULAR = frozenset({"a", "an", "one", "this", "that", "another"})
PLURAL = frozenset({"two", "three", "four", "five", "several", "many", "these", "those"})
AUXILIARIES = {"is": "are", "are": "is", "was": "were", "were": "was"}
SYMMETRIC_VERBS = frozenset({
    "kissing", "hugging", "fighting", "marrying", "meeting", "dancing", "talking", "chatting",
    "wrestling", "sparring", "arguing", "cuddling", "boxing", "fistfighting",
})
# Words that end a noun phrase: auxiliaries, conjunctions, prepositions, negation, relatives.
PHRASE_END = frozenset({
    "is", "are", "was", "were", "and", "or", "but", "not", "in", "on", "at", "to", "with", "by",
    "for", "from", "into", "onto", "over", "under", "across", "through", "towards", "toward",
    "near", "while", "who", "that", "which", "as", "than", "behind", "beside", "along",
    "around", "down", "up", "off", "out", "inside", "outside", "past", "after", "before",
})
# Nouns ending in "ing" that must not end a phrase the way a verb ("a man watching TV") does.
ING_NOUNS = frozenset({
    "swing", "ring", "king", "wing", "thing", "string", "spring", "ceiling", "building",
    "clothing", "morning", "evening", "wedding", "painting", "sibling", "pudding", "icing",
    "something", "nothing", "anything", "everything", "railing", "awning", "stocking",
})
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*|[^\sA-Za-z0-9]")


def _noun_phrase_end(tokens: list[str], start: int) -> int | None:
    """End (exclusive) of the noun phrase that starts with a determiner at ``start``, or None.

    The phrase runs over words up to a :data:`PHRASE_END` word, a determiner, punctuation or a
    second word ending in "ing" (a verb, unless in :data:`ING_NOUNS`); "of" extends it
    ("a group of walruses", "the middle of a street").
    """
    if start >= len(tokens) or tokens[start].lower() not in DETERMINERS:
        return None
    end = start + 1
    while end < len(tokens):
        word = tokens[end].lower()
        if word == "of":
            end += 2 if end + 1 < len(tokens) and tokens[end + 1].lower() in DETERMINERS else 1
            continue
        if (not word[0].isalnum() or word in PHRASE_END or word in DETERMINERS
                or (word.endswith("ing") and word not in ING_NOUNS and end > start + 1)):
            break
        end += 1
    return end if end - start >= 2 and tokens[end - 1].lower() != "of" else None


def _is_plural(phrase: list[str]) -> bool:
    determiner, words = phrase[0].lower(), [w.lower() for w in phrase[1:]]
    if determiner in SINGULAR or determiner in PLURAL:
        return determiner in PLURAL
    head = words[words.index("of") - 1] if "of" in words else words[-1]
    return head.endswith("s") and not head.endswith("ss")


def _join(tokens: list[str]) -> str:
    text = ""
    for token in tokens:
        glue = not text or (not token[0].isalnum() and token not in "(\"'")
        text += token if glue else " " + token
    return text


def role_swap(sentence: str) -> str | None:
    """The sentence with its subject and object phrases exchanged, or None if it has no such form.

        "<det> <words> is|are|was|were <verb>ing [<prep>] <det> <words> ..." -> object first

    The auxiliary follows the number of the new subject ("Two dogs are chasing a cat." -> "A cat is
    chasing two dogs."). None for sentences of another form, symmetric verbs (kissing, fighting,
    ...), objects after "with", and subject and object with the same words. A heuristic without a
    part-of-speech tagger: a few swaps read oddly, none keeps the meaning.

    Args:
        sentence: one English sentence.

    Returns:
        The swapped sentence (the same words, another meaning), or None.

    Reference:
        Zhang, Baldridge and He, "PAWS: Paraphrase Adversaries from Word Scrambling", NAACL 2019.

    Example:
        >>> from logitkit.matching import role_swap
        >>> role_swap("A man is slicing a cucumber.")
        'A cucumber is slicing a man.'
        >>> role_swap("Two dogs are chasing a cat.")
        'A cat is chasing two dogs.'
        >>> role_swap("A man is kissing a woman.") is None  # a symmetric verb: nothing to swap
        True
        >>> role_swap("The sun is shining.") is None  # no object
        True
    """
    tokens = _TOKEN.findall(sentence)
    subject_end = _noun_phrase_end(tokens, 0)
    if subject_end is None or subject_end + 2 >= len(tokens):
        return None
    auxiliary, verb = tokens[subject_end].lower(), tokens[subject_end + 1].lower()
    if auxiliary not in AUXILIARIES or not verb.endswith("ing") or verb in SYMMETRIC_VERBS:
        return None
    start = subject_end + 2
    if tokens[start].lower() == "with":
        return None
    if tokens[start].lower() in PHRASE_END:  # one preposition: "running towards a group"
        start += 1
    object_end = _noun_phrase_end(tokens, start)
    if object_end is None:
        return None
    subject, obj = tokens[:subject_end], tokens[start:object_end]
    if [w.lower() for w in subject[1:]] == [w.lower() for w in obj[1:]]:
        return None
    new_subject = [obj[0][0].upper() + obj[0][1:], *obj[1:]]
    new_object = [subject[0].lower(), *subject[1:]]
    if _is_plural(obj) != (auxiliary in ("are", "were")):
        auxiliary = AUXILIARIES[auxiliary]
    return _join([*new_subject, auxiliary, *tokens[subject_end + 1:start], *new_object,
                  *tokens[object_end:]])


@dataclass(frozen=True)
class SwapSet:
    """Adversarial triples: ``(kept[i], paraphrase[i])`` is similar, ``(kept[i], swapped[i])`` not.

    ``swapped[i] == role_swap(paraphrase[i])``; ``gold[i]`` is the gold score of the original pair.
    Made by :func:`swap_set`; evaluated by :func:`~logitkit.matching.evaluate.swap_metrics` and by
    :class:`~logitkit.matching.TunedThresholdEvaluator`. ``len(swaps)`` is the number of triples.

    Args:
        kept: the sentence of each triple that stays as it is.
        paraphrase: its gold paraphrase, as many.
        swapped: the role swap of the paraphrase, as many.
        gold: float64 array, the gold score of each (kept, paraphrase) pair, as many.

    Reference:
        Zhang, Baldridge and He, "PAWS: Paraphrase Adversaries from Word Scrambling", NAACL 2019.

    Example:
        >>> import numpy as np
        >>> from logitkit.matching.adversarial import SwapSet
        >>> swaps = SwapSet(["A man slices a cucumber."], ["A man is slicing a cucumber."],
        ...                 ["A cucumber is slicing a man."], np.array([4.6]))
        >>> len(swaps), swaps.subset([0, 0]).swapped
        (1, ['A cucumber is slicing a man.', 'A cucumber is slicing a man.'])
    """

    kept: list[str]
    paraphrase: list[str]
    swapped: list[str]
    gold: np.ndarray

    def __len__(self) -> int:
        """The number of triples."""
        return len(self.kept)

    def subset(self, indices: object) -> SwapSet:
        """The triples at ``indices`` (in that order, repeats allowed) as a new :class:`SwapSet`.

        Args:
            indices: positions of the triples to keep (ints or an integer array; flattened).

        Returns:
            A SwapSet of as many triples as indices.

        Raises:
            IndexError: if an index is out of range.
        """
        indices = [int(i) for i in np.asarray(indices).ravel()]
        return SwapSet([self.kept[i] for i in indices], [self.paraphrase[i] for i in indices],
                       [self.swapped[i] for i in indices], self.gold[indices])


def swap_set(pairs: PairSet, *, min_score: float | None = None) -> SwapSet:
    """Every role swap of a similar pair (gold >= ``min_score``), in both directions.

    For a pair (a, b): the triple ``(a, b, role_swap(b))`` when b can be swapped, and
    ``(b, a, role_swap(a))`` when a can, in the order of the pairs.

    Args:
        pairs: the scored pairs to draw from (e.g. STS-B test).
        min_score: a pair is similar when gold >= min_score (default None: the cutoff of
            :func:`~logitkit.matching.evaluate.resolve_cutoff`: label 1 of 0/1 labels, 3 of 0-5).

    Returns:
        A :class:`SwapSet`, empty when no similar pair can be swapped.

    Raises:
        ValueError: as :func:`~logitkit.matching.evaluate.resolve_cutoff` (a non-finite
            ``min_score``, graded labels outside [0, 5] without ``min_score``).

    Reference:
        Zhang, Baldridge and He, "PAWS: Paraphrase Adversaries from Word Scrambling", NAACL 2019.

    Example:
        >>> import numpy as np
        >>> from logitkit.matching import PairSet, swap_set
        >>> pairs = PairSet(["A man slices a cucumber.", "A cat is chasing a mouse."],
        ...                 ["A man is slicing a cucumber.", "A dog runs."], np.array([4.6, 0.4]))
        >>> swaps = swap_set(pairs)  # only the first pair is similar (gold >= 3)
        >>> swaps.kept, swaps.swapped, swaps.gold
        (['A man slices a cucumber.'], ['A cucumber is slicing a man.'], array([4.6]))
    """
    min_score = resolve_cutoff(pairs.scores, cutoff=min_score)
    kept, paraphrase, swapped, gold = [], [], [], []
    for a, b, score in zip(pairs.sentences_a, pairs.sentences_b, pairs.scores, strict=True):
        if score < min_score:
            continue
        for first, second in ((a, b), (b, a)):
            swap = role_swap(second)
            if swap is not None:
                kept.append(first)
                paraphrase.append(second)
                swapped.append(swap)
                gold.append(float(score))
    return SwapSet(kept, paraphrase, swapped, np.asarray(gold, dtype=np.float64))
