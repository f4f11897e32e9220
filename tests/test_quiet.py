"""TensorFlow imported without its start-up lines; whatever else reaches standard error is kept."""

import subprocess
import sys

import pytest

from sentiment.quiet import _NOISE


@pytest.mark.parametrize("line", [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796165724.717765   20236 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "I0000 00:00:1796165724.717765   20236 port.cc:153] oneDNN custom operations are on.",
    "W0000 00:00:1796165724.717765   20236 cpu_feature_guard.cc:210] This TensorFlow binary is optimized to use...",
])
def test_the_start_up_chatter_is_recognised(line):
    assert _NOISE.match(line)


@pytest.mark.parametrize("line", ["Traceback (most recent call last):", "E0000 00:00:17.1 1 some_op.cc:1] a real error",
                                  "ValueError: something the user must see"])
def test_other_lines_are_not(line):
    assert not _NOISE.match(line)


@pytest.mark.slow  # a fresh process that imports TensorFlow
def test_a_quiet_import_leaves_standard_error_free_of_the_chatter():
    code = ("import sys; from sentiment.quiet import import_tensorflow_quietly; import_tensorflow_quietly(); "
            "print('tensorflow' in sys.modules); print('kept', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "True"
    assert done.stderr.strip().splitlines() == ["kept"]
