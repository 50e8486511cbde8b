"""Step 2 — train: MobileNetV2 (alpha 0.35 or 1.0, ImageNet weights) transfer-trained on face crops.

Reads top to bottom: hyperparameters, data, model, head training, fine-tuning, curves. With
``targets`` the model learns soft targets instead of its labels (distillation from teachers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from maskgate.vision.classifier import LABELS
from maskgate.vision.crop import normalise

from .dataset import Split
from .errors import DataError

WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@dataclass(frozen=True)
class Hyperparameters:
    alpha: float = 0.35  # backbone width: 0.35 (Keras' ImageNet file) or 1.0 (ported from TFLite: imagenet.py)
    batch_size: int = 64
    head_epochs: int = 3
    head_learning_rate: float = 1e-3
    fine_tune_epochs: int = 6
    fine_tune_learning_rate: float = 2e-4
    fine_tune_from: str = "block_10_expand"  # layers from here on are trained in the second phase
    dropout: float = 0.2
    label_smoothing: float = 0.05
    early_stopping_patience: int = 3
    max_real_per_class: int = 1200  # real training crops per label (the rare class keeps all); synthetic ones come on top
    seed: int = 1234
    backbone_until: str | None = None  # keep MobileNetV2 only up to this layer (a smaller, faster model)
    teachers: int = 0  # face models (seeds seed+1 …) trained first; the model also learns their mean prediction
    distillation_weight: float = 0.5  # share of the teachers' mean in the soft targets (the rest: the label)


def find_imagenet_weights(keras_home: Path | None) -> Path:
    """The offline ImageNet file: ``$KERAS_HOME/models/`` (or ``keras_home``)."""
    home = keras_home or Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    path = home / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise DataError(f"{path}: ImageNet weights not found (set KERAS_HOME or --keras-home, or use --no-imagenet)")
    return path


def build_model(input_size: int, hp: Hyperparameters, weights: Path | None, *, classes: int = len(LABELS)):
    import keras

    inputs = keras.Input((input_size, input_size, 3), name="rgb_pixels")  # 0–255, RGB
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(inputs)
    backbone = keras.applications.MobileNetV2(
        input_shape=(input_size, input_size, 3), alpha=hp.alpha, include_top=False,
        weights=str(weights) if weights else None,
    )
    if hp.backbone_until:
        backbone = keras.Model(backbone.input, backbone.get_layer(hp.backbone_until).output, name="backbone")
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(hp.dropout)(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mask_classifier"), backbone


def augmenter(seed: int):
    """Door-camera variation: mirror, pose, distance, light, colour cast, focus, compression."""
    import keras
    import tensorflow as tf

    layers = keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomRotation(0.04, fill_mode="nearest", seed=seed),
        keras.layers.RandomZoom((-0.1, 0.1), fill_mode="nearest", seed=seed),
        keras.layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=seed),
        keras.layers.RandomBrightness(0.25, value_range=(0, 255), seed=seed),
        keras.layers.RandomContrast(0.3, seed=seed),
    ])

    def augment(images, labels):
        images = layers(images, training=True)
        images = tf.image.random_saturation(images, 0.6, 1.4, seed=seed)
        images = tf.image.random_hue(images, 0.04, seed=seed)
        blur = tf.nn.avg_pool2d(images, 3, 1, "SAME")
        use_blur = tf.cast(tf.random.uniform([tf.shape(images)[0], 1, 1, 1], seed=seed) < 0.2, images.dtype)
        images = use_blur * blur + (1 - use_blur) * images
        noise = tf.random.normal(tf.shape(images), stddev=4.0, seed=seed)  # sensor / JPEG noise
        return tf.clip_by_value(images + noise, 0, 255), labels

    return augment


NORMALISATION = "raw"  # the model rescales inside (MobileNet preprocessing layer); written to metadata.json


def to_rgb_float(images_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 crops → model input, through the device's own normalisation."""
    return normalise(images_bgr, NORMALISATION)


def class_weights(labels: np.ndarray, classes: int = len(LABELS)) -> dict[int, float]:
    """Inverse-frequency weights, square-root damped so the rare class is boosted but not dominant."""
    counts = np.bincount(labels, minlength=classes).astype(np.float64)
    weights = np.sqrt(counts.sum() / np.maximum(counts, 1) / classes)
    return {i: float(w) for i, w in enumerate(weights)}


def smoothed_one_hot(labels: np.ndarray, smoothing: float, classes: int) -> np.ndarray:
    """Label-smoothed one-hot targets (as Keras' ``CategoricalCrossentropy(label_smoothing=…)``)."""
    return (np.eye(classes, dtype=np.float32)[labels] * (1 - smoothing) + smoothing / classes).astype(np.float32)


def distillation_targets(labels: np.ndarray, teacher_probs: np.ndarray, *, weight: float) -> np.ndarray:
    """Soft targets: ``weight`` × the teachers' mean probabilities + the rest on the true label, so the
    label always keeps at least half (``weight`` ≤ 0.5) and the student also learns how alike the
    classes look to several differently seeded models — steadier on photos nobody trained on."""
    if not 0 <= weight <= 0.5:
        raise ValueError("distillation weight must be within 0 … 0.5 (the label keeps the larger share)")
    classes = teacher_probs.shape[1]
    return ((1 - weight) * np.eye(classes, dtype=np.float32)[labels] + weight * teacher_probs).astype(np.float32)


def train(train_split: Split, val_split: Split, *, input_size: int, hp: Hyperparameters,
          weights: Path | None, out_dir: Path, progress: bool = True, classes: int = len(LABELS),
          targets: np.ndarray | None = None):
    """Head first, then fine-tune the top blocks; early stopping on validation loss. ``targets``
    (one row per training crop, summing to 1) replace the labels' smoothed one-hot targets."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(hp.seed)
    if len(train_split.labels) == 0 or len(val_split.labels) == 0:
        raise DataError("training and validation splits must both hold crops")

    # Data (class weights go by each crop's label: Keras takes the argmax of soft targets, which is the label)
    if targets is None:
        targets = smoothed_one_hot(train_split.labels, hp.label_smoothing, classes)
    elif targets.shape != (len(train_split.labels), classes) or np.any(
            targets[np.arange(len(targets)), train_split.labels] < targets.max(axis=1) - 1e-6):
        raise ValueError("soft targets need one row per training crop, largest on its label")
    augment = augmenter(hp.seed)
    train_ds = (tf.data.Dataset.from_tensor_slices((to_rgb_float(train_split.images), targets))
                .shuffle(len(train_split.labels), seed=hp.seed).batch(hp.batch_size)
                .map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))
    val_targets = smoothed_one_hot(val_split.labels, hp.label_smoothing, classes)
    val_ds = tf.data.Dataset.from_tensor_slices((to_rgb_float(val_split.images), val_targets)).batch(128)
    weights_by_class = class_weights(train_split.labels, classes)

    def compile_and_fit(model, learning_rate, epochs, initial_epoch=0):
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss=keras.losses.CategoricalCrossentropy(),
            metrics=["accuracy"],
        )
        stop = keras.callbacks.EarlyStopping(patience=hp.early_stopping_patience, restore_best_weights=True)
        return model.fit(train_ds, validation_data=val_ds, epochs=initial_epoch + epochs, initial_epoch=initial_epoch,
                         class_weight=weights_by_class, callbacks=[stop], verbose=2 if progress else 0)

    # Model
    model, backbone = build_model(input_size, hp, weights, classes=classes)

    # Phase 1: train the head on a frozen backbone
    backbone.trainable = False
    head = compile_and_fit(model, hp.head_learning_rate, hp.head_epochs)

    # Phase 2: fine-tune the top blocks (BatchNorm stays frozen: small batches would wreck its statistics)
    backbone.trainable = True
    trainable = False
    for layer in backbone.layers:
        trainable = trainable or layer.name == hp.fine_tune_from
        layer.trainable = trainable and not isinstance(layer, keras.layers.BatchNormalization)
    tune = compile_and_fit(model, hp.fine_tune_learning_rate, hp.fine_tune_epochs, initial_epoch=len(head.epoch))

    history = {k: head.history[k] + tune.history.get(k, []) for k in head.history}
    save_curves(history, out_dir / "curves.png", fine_tune_start=len(head.epoch))
    return model, history


def save_curves(history: dict, path: Path, *, fine_tune_start: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(history[metric], label=f"train {metric}")
        ax.plot(history[f"val_{metric}"], label=f"validation {metric}")
        ax.axvline(fine_tune_start - 0.5, color="grey", linestyle=":", label="fine-tuning starts")
        ax.set_xlabel("epoch")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
