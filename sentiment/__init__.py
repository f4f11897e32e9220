"""sentiment-sweep: experiment-tracked LSTM hyperparameter search on IMDb reviews."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the project's own
# output; users can still set the variable themselves.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
