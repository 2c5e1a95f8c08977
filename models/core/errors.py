"""The few typed errors that `models/` raises.

Each message is written for a person: it says what is wrong and, where it can,
what to do. The UI shows the message as is; it never shows a traceback.
"""


class LMLabError(Exception):
    """Base class: anything the UI may show to a user."""


class InputError(LMLabError, ValueError):
    """The user's input (text, file, setting) cannot be used as given."""


class ModelUnavailable(LMLabError):
    """A model exists in the catalogue but cannot be loaded here (offline, missing files)."""


class AssetError(LMLabError):
    """An embedded asset could not be fetched, verified or extracted."""


class CorruptFile(LMLabError, ValueError):
    """A file is truncated, has a wrong magic, a failed checksum, or a bad header."""


class FingerprintMismatch(LMLabError):
    """A compressed file was made with another model or settings than the decoder's."""


class Cancelled(LMLabError):
    """The user asked to stop."""


class ServerError(LMLabError):
    """A model server (an OpenAI-compatible engine such as vLLM) is down, slow, refused or dropped a request."""
