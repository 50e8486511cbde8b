"""Loads a TFLite model with whichever LiteRT runtime is installed."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            try:
                from tensorflow.lite import Interpreter
            except ImportError:
                raise ModelError(
                    "no TFLite runtime found: pip install ai-edge-litert"
                ) from None
    return Interpreter


def load_interpreter(path: str | Path, *, num_threads: int):
    """Return an allocated interpreter for the model at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    try:
        interpreter = _interpreter_class()(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a valid TFLite model ({first_line})") from None
    return interpreter
