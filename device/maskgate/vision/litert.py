"""Loads a TFLite model with whichever LiteRT runtime is installed."""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
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


def load_interpreter(path: str | Path, *, num_threads: int, keep_tensors: bool = False, delegate: bool = True):
    """Return an allocated interpreter for the model at ``path``. ``keep_tensors``: inner tensors stay
    readable after ``invoke`` (a little slower; for embeddings). ``delegate=False``: the plain op graph,
    for reading the model's structure and weights (far too slow to run)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    interpreter_class = _interpreter_class()
    options = {"experimental_preserve_all_tensors": True} if keep_tensors else {}
    if not delegate:
        resolvers = sys.modules[interpreter_class.__module__].OpResolverType
        options["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        with warnings.catch_warnings(), _without_runtime_notice():
            warnings.filterwarnings("ignore", message=".*preserve_all_tensors")
            interpreter = interpreter_class(model_path=str(path), num_threads=num_threads, **options)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a valid TFLite model ({first_line})") from None
    return interpreter


RUNTIME_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
_stderr = threading.Lock()


@contextmanager
def _without_runtime_notice():
    """LiteRT's C++ runtime writes RUNTIME_NOTICE to stderr (file descriptor 2) for every interpreter it
    builds; everything else written there meanwhile, from any thread, is passed on afterwards."""
    with _stderr, tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            rest = caught.read().replace(RUNTIME_NOTICE, b"")
            if rest:
                os.write(2, rest)
