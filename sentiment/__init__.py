"""sentiment-sweep: experiment-tracked LSTM hyperparameter search on IMDb reviews."""

import os

# TensorFlow's C++ chatter (CUDA probing, oneDNN notices) hides the project's own output. On a
# machine without an NVIDIA driver its CUDA errors are noise too; users can still set the variable.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if os.path.exists("/dev/nvidiactl") else "3")
