"""The one error hierarchy of tillsight.

Every error the SDK raises on purpose derives from :class:`TillsightError`, and its
message is one line that says what is wrong and what to do about it::

    TillsightError
    ├── OptionsError              an option given from Python or the CLI is out of range or unknown (also a ValueError)
    ├── ProfileError              unknown profile, invalid TOML, bad key or value
    ├── ModelLoadError            missing, corrupt, unsafe or unsupported model file
    ├── DataError                 unreadable data folder or list file, bad labels file
    │   └── CalibrationError      too few usable calibration images
    ├── ConversionError           the converter failed or produced a non-integer model
    ├── AccuracyError             the converted model lost more accuracy than allowed
    ├── BundleError               missing, malformed or tampered bundle
    │   └── SignatureError        unsigned, or not signed by a trusted key, while keys are configured
    ├── BackendUnavailableError   the runtime package or device for a backend is missing
    ├── InferenceError            the backend failed on an input
    ├── SourceError               a camera, stream, video file or image folder cannot be read
    ├── SinkError                 an event sink cannot be set up (an MQTT outbox that cannot be opened)
    ├── BudgetError               a bundle measured on this machine is over its profile's budget
    └── FleetError                a fleet message is malformed, or a rollout cannot go on
        └── DownloadError         a bundle could not be fetched (unreachable, too big, wrong sha256)

Errors from TensorFlow, LiteRT and friends are translated at the boundary with
``raise ... from exc`` so that callers only ever need to catch ``TillsightError``.
"""

from __future__ import annotations

__all__ = [
    "TillsightError",
    "OptionsError",
    "ProfileError",
    "ModelLoadError",
    "DataError",
    "CalibrationError",
    "ConversionError",
    "AccuracyError",
    "BundleError",
    "BackendUnavailableError",
    "InferenceError",
    "SourceError",
    "SinkError",
    "SignatureError",
    "BudgetError",
    "FleetError",
    "DownloadError",
    "summarize",
]


class TillsightError(Exception):
    """Base class of every error tillsight raises on purpose."""


class OptionsError(TillsightError, ValueError):
    """An option passed from Python or the command line is unknown or out of range.

    It is a ``ValueError`` too, the standard exception for a bad argument value.
    """


class ProfileError(TillsightError):
    """A device profile is unknown or invalid."""


class ModelLoadError(TillsightError):
    """A source model could not be loaded (missing, corrupt, unsafe, unsupported)."""


class DataError(TillsightError):
    """Image data or a labels file could not be used."""


class CalibrationError(DataError):
    """Too few usable calibration images."""


class ConversionError(TillsightError):
    """A converter failed or produced a model that does not meet the profile."""


class AccuracyError(TillsightError):
    """The converted model lost more top-1 accuracy than the profile allows."""


class BundleError(TillsightError):
    """A bundle is missing, malformed, or does not match its manifest."""


class BackendUnavailableError(TillsightError):
    """The runtime package or the device a backend needs is not available."""


class InferenceError(TillsightError):
    """The runtime backend failed on an input."""


class SourceError(TillsightError):
    """A frame source (camera, stream, video file, image folder) cannot be opened or read."""


class SinkError(TillsightError):
    """An event sink cannot be set up (an MQTT outbox that cannot be opened)."""


class SignatureError(BundleError):
    """With trusted keys configured: the bundle is unsigned, signed by another key, or edited since."""


class BudgetError(TillsightError):
    """A bundle measured here is slower or bigger than its profile's budget allows."""


class FleetError(TillsightError):
    """A fleet message (desired or reported state) is malformed, or a rollout cannot go on."""


class DownloadError(FleetError):
    """A bundle could not be downloaded: unreachable, over the size limit, or not the sha256 it should have."""


def summarize(text: object, prefer_errors: bool = False, limit: int = 300) -> str:
    """One line of a library's (often multi-line) message, for a translated error.

    Args:
        text: The message or exception.
        prefer_errors: Take the first line mentioning "error" when there is one (compiler logs).
        limit: Cut the line to this many characters.

    Returns:
        The line, or the exception's type name when the message is empty.
    """
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if prefer_errors:
        lines = [line for line in lines if "error" in line.lower()] or lines
    if not lines:
        return type(text).__name__ if isinstance(text, BaseException) else "no output"
    return lines[0][:limit]
