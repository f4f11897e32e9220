"""`sentiment predict` before any model: reading reviews, and the errors a user can cause."""

import pytest

from sentiment.cli import main
from sentiment.errors import PredictError
from sentiment.registry.predict import collect_reviews, decode_reviews
from tests.conftest import tiny_overrides


def test_predict_with_no_champion_prints_a_hint(imdb_dir, tmp_path, capsys):
    assert main(["predict", "--text", "great", *tiny_overrides(imdb_dir, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "make promote" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error" in line.lower()]) == 1


@pytest.mark.parametrize("raw, message", [
    (b"", "no review text"),
    (b"\n  \n", "no review text"),
    (b"caf\xe9 au lait", "not UTF-8"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
])
def test_bad_predict_input_gets_a_clear_message(raw, message):
    with pytest.raises(PredictError, match=message):
        collect_reviews([], None, raw)


def test_predict_reads_one_review_per_line():
    assert decode_reviews(b"good\n\nbad  \n", "x") == ["good", "bad"]
