"""The search wing: engines that run trials (Optuna, Keras Tuner), one tracked trial, how Optuna
samples and prunes, where a study is stored, and the workers and recovery that share one study."""
