"""VQA accuracy as the VQAv2 evaluation computes it.

An answer is normalised the way the official VQA evaluation (`vqaEval.py`) and the EvalAI answer processor do it:
newlines and tabs become spaces, punctuation is removed (or turned into a space, depending on its surroundings), a
period is dropped unless it is a decimal point, the text is lower-cased, number words become digits, the articles
"a", "an" and "the" are dropped, and contractions written without an apostrophe get it back ("dont" -> "don't").

With ten human answers a prediction scores `min(#humans who gave it / 3, 1)`, averaged over the ten subsets of nine
answers (leave one out), so one match gives 0.3, two 0.6, three 0.9 and four or more 1. A question with a single
reference answer is scored by exact match after normalisation.

Unlike `vqaEval.py`, which leaves answers as written when all ten humans agree, both the prediction and the human
answers are always normalised here, as the EvalAI answer processor and lmms-eval's VQAv2 task do; the two only differ
when a prediction differs from unanimous answers in case, punctuation, articles or number words ("Two" against ten
"2"), which `vqaEval.py` scores 0 and this scores 1.

The tables below are the official ones, quirks included ("somebody'd" maps to "somebodyd"), so scores reproduce
published ones.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import fmean

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
# The official period pattern: its look-behind is misspelt ("(?!<=" for "(?<!"), so a period is dropped whenever no
# digit follows it; kept as published so that scores match.
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# Humans whose answer must match for full credit.
MATCHES_FOR_FULL_CREDIT = 3


def _strip_punctuation(text: str) -> str:
    """Removes each punctuation mark, or replaces it by a space when it stands between words."""
    result = text
    has_digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for mark in PUNCTUATION:
        if mark + " " in text or " " + mark in text or has_digit_comma:
            result = result.replace(mark, "")
        else:
            result = result.replace(mark, " ")
    return _PERIOD.sub("", result)


def _digits_articles_contractions(text: str) -> str:
    """Lower-cases, writes number words as digits, drops articles and restores contractions' apostrophes."""
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def normalize_answer(answer: str) -> str:
    """An answer as the VQA evaluation compares it (see the module docstring)."""
    if not isinstance(answer, str):
        raise TypeError(f"an answer must be a string, got {type(answer).__name__}.")
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    return _digits_articles_contractions(_strip_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQA accuracy of `prediction` against the human `answers`: exact match for one answer, otherwise
    `min(#matching humans / 3, 1)` averaged over the leave-one-out subsets."""
    if not answers:
        raise ValueError("a question needs at least one reference answer to be scored.")
    predicted = normalize_answer(prediction)
    matches = [normalize_answer(answer) == predicted for answer in answers]
    if len(matches) == 1:
        return float(matches[0])
    total = sum(matches)
    # Leaving out a matching answer leaves total - 1 matches among the others; leaving out any other leaves total.
    return fmean(min(1.0, (total - left_out) / MATCHES_FOR_FULL_CREDIT) for left_out in matches)


def vqa_scores(items: Iterable[tuple[str, Sequence[str], str | None]]) -> dict[str, float]:
    """Mean VQA accuracy over `(prediction, answers, question_type)` items, as `accuracy`, with one
    `accuracy/<question type>` entry per type that items name."""
    overall: list[float] = []
    by_type: dict[str, list[float]] = defaultdict(list)
    for prediction, answers, question_type in items:
        score = vqa_accuracy(prediction, answers)
        overall.append(score)
        if question_type:
            by_type[question_type].append(score)
    if not overall:
        raise ValueError("no question to score.")
    scores = {"accuracy": fmean(overall)}
    scores.update({f"accuracy/{name}": fmean(values) for name, values in sorted(by_type.items())})
    return scores
