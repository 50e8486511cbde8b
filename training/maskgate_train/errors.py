"""Training input errors: one line naming the file at fault."""

from maskgate.errors import MaskgateError


class DataError(MaskgateError):
    """A data set folder, image or annotation cannot be used."""
