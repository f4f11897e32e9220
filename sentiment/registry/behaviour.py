"""Behaviour checks: generated reviews a sentiment model is known to get wrong (in the spirit of
CheckList, Ribeiro et al. 2020), scored like any review and compared between two versions.

Two kinds of check:
- label: each review has an expected label (negation, intensifiers, the verdict at the start or
  the end of a review longer than the model reads);
- invariance: each case is a group of variants that should all get one label, whatever it is
  (swapped person and movie names, `<br />` and punctuation noise, neutral filler).

A check's failure rate is the fraction of its cases that fail. The suite is fixed (no sampling):
two runs over one model give the same table, and two versions are scored on the same cases.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

LABEL, INVARIANCE = "label", "invariance"
ARTIFACT = "behaviour/checks.csv"  # a sweep's table, on its run

POSITIVE = ("good", "great", "wonderful", "excellent", "brilliant", "enjoyable")
NEGATIVE = ("bad", "terrible", "awful", "boring", "dull", "poor")
INTENSIFIERS = ("very", "really", "truly", "extremely", "incredibly")
# Two words each, and the movies one word each: swapping them keeps the review's length, so a
# model that knows none of them gives every variant exactly the same tokens.
PEOPLE = ("Tom Hanks", "Meryl Streep", "Denzel Washington", "Julia Roberts", "Bruce Willis", "Sandra Bullock")
MOVIES = ("Casablanca", "Titanic", "Vertigo", "Alien", "Jaws", "Psycho")

SHORT_REVIEWS = (  # (review, label): the originals that noise and filler are added to
    ("The movie was great and I loved every minute of it.", 1),
    ("A wonderful film with a brilliant cast.", 1),
    ("An excellent story, beautifully told.", 1),
    ("The movie was awful and I hated every minute of it.", 0),
    ("A boring film with a terrible script.", 0),
    ("A dull story, poorly told.", 0),
    ("I enjoyed this film, the acting is superb.", 1),
    ("One of the best movies I have seen this year.", 1),
    ("Funny, moving and smart. Go and see it.", 1),
    ("I wasted two hours on this mess of a film.", 0),
    ("One of the worst movies I have seen this year.", 0),
    ("Badly acted, badly written. Avoid it.", 0),
)
NAME_TEMPLATES = (  # {person} and {movie} are swapped; the rest is fixed. Two neutral, two positive and
    # two negative reviews: a name that pushes one way flips the reviews that lean the other way.
    "{person} stars in {movie}.",
    "I watched {movie} because {person} is in it.",
    "{person} was great in {movie}.",
    "{movie} is brilliant and {person} is wonderful in it.",
    "{person} was awful in {movie}, a boring and terrible film.",
    "{movie} is a dull mess, and {person} is poor in it.",
)
FILLER = (  # sentences with no opinion in them
    "I saw it on a Sunday afternoon.", "The cinema was half full.", "It runs for about two hours.",
    "My brother came along.", "It was released in the spring.", "We bought popcorn before it started.",
)
PLOT = (  # neutral plot summary, repeated into a review longer than any sequence_length the model reads
    "The story follows a family who moves to a small town by the sea. The father takes a job at the "
    "harbour and the mother opens a shop on the main street. Their two children start at a new school "
    "and meet the neighbours, an old fisherman and his daughter. Over one summer the town prepares for "
    "a festival, a storm passes through, and the family decides whether to stay. "
)
LONG_REVIEW_WORDS = 500  # the default data.sequence_length keeps 400 tokens


@dataclass(frozen=True)
class Check:
    name: str
    kind: str                                 # LABEL or INVARIANCE
    cases: tuple[tuple[str, ...], ...]        # label: (review,); invariance: the variants of one review
    expected: tuple[int, ...] = ()            # label checks: each case's expected label
    about: str = ""                           # what it probes, for the table


def _label_check(name: str, about: str, reviews: list[tuple[str, int]]) -> Check:
    return Check(name, LABEL, tuple((text,) for text, _ in reviews), tuple(label for _, label in reviews), about)


def negation() -> Check:
    reviews = [(f"The movie was not {word}.", 0) for word in POSITIVE]
    reviews += [(f"The movie was not {word} at all.", 1) for word in NEGATIVE]
    return _label_check("negation", "'not good' is negative, 'not bad at all' positive", reviews)


def intensifiers() -> Check:
    reviews = [(f"The film was {very} {word}.", label) for very in INTENSIFIERS
               for words, label in ((POSITIVE, 1), (NEGATIVE, 0)) for word in words[:3]]
    return _label_check("intensifiers", "'really great' is positive, 'truly awful' negative", reviews)


def long_plot() -> str:
    words = (PLOT * (LONG_REVIEW_WORDS // len(PLOT.split()) + 1)).split()[:LONG_REVIEW_WORDS]
    return " ".join(words)


def verdict_position() -> Check:
    plot = long_plot()
    reviews = []
    for words, label in ((POSITIVE, 1), (NEGATIVE, 0)):
        for word in words[:3]:
            verdict = f"Overall, a {word} film."
            reviews += [(f"{verdict} {plot}", label), (f"{plot} {verdict}", label)]
    return _label_check("verdict_position", f"the verdict opens or closes a {LONG_REVIEW_WORDS}-word review", reviews)


def names() -> Check:
    pairings = [list(zip(PEOPLE, MOVIES[shift:] + MOVIES[:shift], strict=True)) for shift in range(3)]  # who stars in what
    cases = tuple(tuple(template.format(person=person, movie=movie) for person, movie in pairs)
                  for template in NAME_TEMPLATES for pairs in pairings)
    return Check("names", INVARIANCE, cases, about="the label does not depend on which actor or movie is named")


def noise_variants(text: str) -> tuple[str, ...]:
    """The review, with line breaks as IMDb stores them, shouted, without punctuation, spaced out."""
    words = text.split()
    middle = len(words) // 2
    return (text, " ".join(words[:middle]) + "<br /><br />" + " ".join(words[middle:]), text.rstrip(".") + "!!!",
            text.replace(",", "").replace(".", ""), "  ".join(words))


def noise() -> Check:
    return Check("noise", INVARIANCE, tuple(noise_variants(text) for text, _ in SHORT_REVIEWS),
                 about="<br /> tags and punctuation do not change the label")


def neutral_filler() -> Check:
    cases = tuple((text, f"{FILLER[0]} {text}", f"{text} {FILLER[1]} {FILLER[2]}", f"{' '.join(FILLER[3:])} {text}")
                  for text, _ in SHORT_REVIEWS)
    return Check("neutral_filler", INVARIANCE, cases, about="sentences without an opinion do not change the label")


SUITE: tuple[Check, ...] = (negation(), intensifiers(), verdict_position(), names(), noise(), neutral_filler())


def failures(check: Check, labels: list[np.ndarray]) -> np.ndarray:
    """Which cases fail, from each case's predicted labels (one per variant)."""
    if check.kind == LABEL:
        return np.array([case[0] != expected for case, expected in zip(labels, check.expected, strict=True)])
    return np.array([len(set(case.tolist())) > 1 for case in labels])


def run_checks(probability: Callable[[list[str]], np.ndarray], suite: tuple[Check, ...] = SUITE) -> pd.DataFrame:
    """One row per check: kind, cases, failures, failure_rate and its first failing case; the
    reviews are scored in one call of `probability` (reviews -> probability of positive)."""
    texts = [text for check in suite for case in check.cases for text in case]
    predicted = (np.asarray(probability(texts), dtype=float) >= 0.5).astype(int)
    rows, start = [], 0
    for check in suite:
        labels = []
        for case in check.cases:
            labels.append(predicted[start : start + len(case)])
            start += len(case)
        failed = failures(check, labels)
        first = check.cases[int(np.argmax(failed))][0] if failed.any() else ""
        rows.append({"check": check.name, "kind": check.kind, "cases": len(check.cases), "failures": int(failed.sum()),
                     "failure_rate": float(failed.mean()), "first_failure": first[:120], "about": check.about})
    return pd.DataFrame(rows).set_index("check")


def regressions(candidate: pd.DataFrame, champion: pd.DataFrame, tolerance: float) -> list[str]:
    """The checks the candidate fails on more cases than the champion, beyond `tolerance` (a
    fraction of the check's cases), each as 'name candidate% vs champion%'."""
    worse = []
    for check, row in candidate.iterrows():
        if check in champion.index and row.failure_rate - champion.loc[check, "failure_rate"] > tolerance + 1e-9:
            worse.append(f"{check} {row.failure_rate:.0%} vs {champion.loc[check, 'failure_rate']:.0%}")
    return worse


def behaviour_tags(table: pd.DataFrame) -> dict[str, float]:
    """behaviour.<check>.failure_rate: a version's table, as version tags."""
    return {f"behaviour.{check}.failure_rate": round(rate, 4) for check, rate in table.failure_rate.items()}


def side_by_side(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Failure rates per check, one column per model, for people."""
    return pd.DataFrame({label: table.failure_rate for label, table in tables.items()})
