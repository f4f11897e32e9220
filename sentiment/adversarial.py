"""Adversarial training on the word embeddings (Goodfellow et al. 2015; Miyato et al. 2017).

Each training step adds, to the loss on the batch, the loss on the same batch with its embedded
reviews moved a small step in the direction that raises the loss most: r = eps * g / ||g||, with
g the loss's gradient with respect to the review's embeddings (over all its real tokens and
dimensions together). Miyato et al. normalise the embeddings to unit variance first, so that eps
is a size relative to the embeddings and the model cannot make the step negligible by growing
them; here the step is scaled by the batch's embedding standard deviation instead, which has the
same effect without changing the model that is served.

Training only: the model is split into the Embedding and the classifier behind it (a nested
model, so the step can be added between them), and model.plain_model gives the plain Keras
model of the same layers, which is what is logged, registered and served.
"""

from __future__ import annotations

import warnings

import keras
import tensorflow as tf

CLASSIFIER = "classifier"  # the nested model behind the Embedding
# Keras warns that the nested classifier "destroys" the mask it is given: it uses it inside (the
# LSTM and the pooling read it) and its output, one probability per review, needs none.
warnings.filterwarnings("ignore", message=f"Layer '{CLASSIFIER}' .* does not support masking")


class AdversarialTraining(keras.Model):
    """A functional model tokens -> Embedding -> CLASSIFIER whose train_step adds the loss on
    adversarially perturbed embeddings (weight 1, as in the papers). Metrics are those of the
    clean batch; validation and prediction are the plain model's."""

    def __init__(self, *args, epsilon: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon = float(epsilon)

    def train_step(self, data):
        tokens, labels = data[0], data[1]
        embedding, classifier = self.get_layer("embedding"), self.get_layer(CLASSIFIER)
        mask = tf.not_equal(tokens, 0)
        with tf.GradientTape() as tape:
            embedded = embedding(tokens)
            clean_prediction, clean_loss, step = self._loss_and_step(classifier, embedded, mask, tokens, labels)
            adversarial = classifier(embedded + step, mask=mask, training=True)
            loss = clean_loss + self.compute_loss(x=tokens, y=labels, y_pred=adversarial, training=True)
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        # The logged training loss is the clean one, comparable with a plain model's (as Keras's
        # own train_step records it: its loss tracker, weighted by the batch size).
        self._loss_tracker.update_state(clean_loss, sample_weight=tf.shape(tokens)[0])
        return self.compute_metrics(tokens, labels, clean_prediction)

    def _loss_and_step(self, classifier, embedded, mask, tokens, labels):
        """The clean prediction and loss, and the perturbation of the embeddings that raises it
        most at size epsilon (in embedding standard deviations; a constant: no gradient flows
        through it)."""
        real = tf.cast(mask, embedded.dtype)[..., None]
        with tf.GradientTape() as inner:
            inner.watch(embedded)
            prediction = classifier(embedded, mask=mask, training=True)
            loss = self.compute_loss(x=tokens, y=labels, y_pred=prediction, training=True)
        gradient = tf.stop_gradient(inner.gradient(loss, embedded)) * real
        norm = tf.sqrt(tf.reduce_sum(tf.square(gradient), axis=[1, 2], keepdims=True)) + 1e-12
        spread = tf.stop_gradient(_masked_std(embedded, real))
        return prediction, loss, self.epsilon * spread * gradient / norm


def _masked_std(embedded: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """Standard deviation of the embedding values at the real (unpadded) tokens of the batch."""
    count = tf.reduce_sum(real) * tf.cast(tf.shape(embedded)[-1], embedded.dtype) + 1e-12
    mean = tf.reduce_sum(embedded * real) / count
    return tf.sqrt(tf.reduce_sum(tf.square(embedded - mean) * real) / count)
