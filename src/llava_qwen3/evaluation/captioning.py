"""COCO captioning metrics with the reference implementations: pycocoevalcap's PTB tokenizer and its BLEU-1..4,
METEOR, ROUGE-L and CIDEr-D scorers, run exactly as `pycocoevalcap.eval.COCOEvalCap` runs them.

The PTB tokenizer (Stanford CoreNLP 3.4.1) and METEOR 1.5 are Java programs shipped inside pycocoevalcap, so a Java
runtime must be on the PATH. SPICE is left out: pycocoevalcap's SPICE downloads Stanford CoreNLP 3.6.0 from Stanford's
servers on first use, which an offline machine cannot do (`SPICE_LEFT_OUT` says so in every result).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from collections.abc import Mapping, Sequence
from typing import Any

logger = logging.getLogger(__name__)

CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
SPICE_LEFT_OUT = (
    "SPICE is left out: pycocoevalcap's SPICE downloads Stanford CoreNLP 3.6.0 on first use, which needs internet "
    "access that this evaluation does not assume."
)


class JavaMissingError(RuntimeError):
    """Captioning metrics need a Java runtime and none is on the PATH."""


def check_java() -> None:
    """A `JavaMissingError` saying how to install Java when `java` is not on the PATH."""
    if shutil.which("java") is None:
        raise JavaMissingError(
            "captioning metrics need Java: pycocoevalcap's PTB tokenizer and METEOR are Java programs, and no `java` "
            "is on the PATH. Install a Java runtime (Debian/Ubuntu: `apt-get install default-jre-headless`)."
        )


class CaptionScorer:
    """Scores captions with pycocoevalcap; METEOR's Java process (which loads its paraphrase table, 15-30 s) starts at
    the first `score` call and serves every later one until `close()` (or the end of a `with` block)."""

    def __init__(self) -> None:
        check_java()
        self._meteor: Any = None
        self._closed = False

    def score(self, predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
        """Corpus-level BLEU-1..4, METEOR, ROUGE-L and CIDEr-D of `predictions` (one caption per id) against
        `references` (one or more captions per id), after PTB tokenisation, as COCO's evaluation computes them."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.meteor.meteor import Meteor
        from pycocoevalcap.rouge.rouge import Rouge
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        if self._closed:
            raise RuntimeError("this CaptionScorer is closed; make a new one.")
        if set(predictions) != set(references):
            missing = sorted(set(predictions) ^ set(references))[:5]
            raise ValueError(f"predictions and references must cover the same ids; these are in only one: {missing}.")
        if not predictions:
            raise ValueError("no caption to score.")
        for key, captions in references.items():
            if isinstance(captions, str) or not captions:
                raise ValueError(f"references of {key!r} must be a non-empty list of captions.")
        if self._meteor is None:
            self._meteor = Meteor()
        tokenizer = PTBTokenizer()
        gts = tokenizer.tokenize({key: [{"caption": caption} for caption in references[key]] for key in predictions})
        res = tokenizer.tokenize({key: [{"caption": caption}] for key, caption in predictions.items()})
        scores: dict[str, float] = {}
        scorers = (
            (Bleu(4), CAPTION_METRICS[:4]),
            (self._meteor, ["METEOR"]),
            (Rouge(), ["ROUGE_L"]),
            (Cider(), ["CIDEr"]),
        )
        for scorer, names in scorers:
            scores.update(zip(names, _quiet_score(scorer, gts, res), strict=True))
        return {name: float(scores[name]) for name in CAPTION_METRICS}

    def close(self) -> None:
        """Ends METEOR's Java process."""
        self._closed = True
        if self._meteor is not None:
            meteor, self._meteor = self._meteor, None
            meteor.__del__()  # pycocoevalcap ends its process only there; running it again when collected is harmless

    def __enter__(self) -> CaptionScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """`CaptionScorer().score(predictions, references)` with a scorer made for this one call."""
    with CaptionScorer() as scorer:
        return scorer.score(predictions, references)


def _quiet_score(scorer: Any, gts: dict, res: dict) -> list[float]:
    """The scorer's corpus score(s); what pycocoevalcap prints on the way goes to the debug log."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        score, _ = scorer.compute_score(gts, res)
    if printed.getvalue().strip():
        logger.debug("%s: %s", scorer.method(), printed.getvalue().strip())
    return list(score) if isinstance(score, list) else [score]
