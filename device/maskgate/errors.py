"""Errors meant for people: one line that names the file, key or value at fault."""


class MaskgateError(Exception):
    """Base of every error maskgate reports as a one-line message instead of a traceback."""


class ModelError(MaskgateError):
    """A model file or bundle is missing, corrupt or does not match what the code expects."""


class FrameError(MaskgateError):
    """A frame (image array) cannot be processed: empty, wrong dtype or wrong shape."""


class ConfigError(MaskgateError):
    """The configuration file is missing, unparsable or invalid."""
