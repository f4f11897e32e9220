"""Import TensorFlow without its start-up lines, which ignore TF_CPP_MIN_LOG_LEVEL.

TensorFlow's shared libraries log (oneDNN notice, "Could not find cuda drivers") before their
logging is configured, straight to file descriptor 2. The import runs with that descriptor
pointed at a temporary file; whatever else was written there is passed on.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} .*"
                    r"(port\.cc|cudart_stub\.cc|cuda_|dso_loader|cpu_feature_guard))")


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode(errors="replace").splitlines():
            if line.strip() and not _NOISE.match(line):
                print(line, file=sys.stderr)
