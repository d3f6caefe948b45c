"""Frame sources: USB cameras, video files, RTSP/HTTP streams (OpenCV ``VideoCapture``), image folders.

A source only opens, reads one image and closes; the capture thread
(:mod:`tillsight.pipelines.capture`) adds the latest-frame policy, reconnection and
freeze detection on top, the same for every source. ``open_source`` picks the source
type from what the user typed: ``0`` (camera index), ``rtsp://...`` / ``http://...``,
a folder of images or a video file.
"""

from __future__ import annotations

import abc
import logging
import re
from pathlib import Path

import cv2
import numpy as np

from ..errors import SourceError

__all__ = ["Source", "CameraSource", "StreamSource", "VideoFileSource", "ImageFolderSource", "open_source"]

logger = logging.getLogger(__name__)

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


class Source(abc.ABC):
    """Where frames come from. Not thread-safe: one capture thread owns it."""

    source_id: str
    live: bool  # a live source keeps producing frames; the consumer must not fall behind it
    fps: float  # nominal frames per second (0 when unknown)
    stills: bool = False  # separate photos, one item each, rather than frames of one scene

    @abc.abstractmethod
    def open(self) -> None:
        """Open (or reopen) the source.

        Raises:
            SourceError: It cannot be opened now.
        """

    @abc.abstractmethod
    def read(self) -> np.ndarray | None:
        """The next image, or None at the end of a file or when a live source failed to deliver."""

    def media_time(self, frames_read: int) -> float | None:
        """Media time in seconds of the ``frames_read``-th frame for recorded sources, else None."""
        return None

    @abc.abstractmethod
    def close(self) -> None:
        """Release the device, file or connection. Safe to call twice."""


class _VideoCaptureSource(Source):
    """Common code of the sources OpenCV's ``VideoCapture`` reads."""

    _what = "video source"

    def __init__(self, target: int | str, source_id: str):
        self._target = target
        self.source_id = source_id
        self.fps = 0.0
        self._capture: cv2.VideoCapture | None = None

    def _configure(self, capture: cv2.VideoCapture) -> None:
        """Set properties on a freshly opened capture."""

    def _open_capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(self._target)

    def open(self) -> None:
        self.close()
        capture = self._open_capture()
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self._what} {self.source_id}: {self._hint()}")
        self._configure(capture)
        self.fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if not (0 < self.fps < 1000):  # some backends report 0 or garbage
            self.fps = 0.0
        self._capture = capture

    def read(self) -> np.ndarray | None:
        if self._capture is None:
            return None
        ok, image = self._capture.read()
        if not ok or image is None or image.size == 0:
            return None
        return image

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _hint(self) -> str:
        return "check that it exists and that OpenCV can decode it"


class CameraSource(_VideoCaptureSource):
    """A USB (V4L2) camera by index."""

    live = True
    _what = "camera"

    def __init__(self, index: int, width: int | None = None, height: int | None = None):
        """Args:
        index: Camera index (0 is the first camera, ``/dev/video0`` on Linux).
        width: Requested frame width; the camera may pick the nearest it supports.
        height: Requested frame height.
        """
        super().__init__(index, str(index))
        self._size = (width, height)

    def _configure(self, capture: cv2.VideoCapture) -> None:
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # honoured by V4L2: fewer stale frames queued in the driver
        width, height = self._size
        if width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)

    def _hint(self) -> str:
        return "check the cable and that no other program holds the camera, or pick another index"


class StreamSource(_VideoCaptureSource):
    """A network stream (``rtsp://``, ``http://``...) read through OpenCV's FFmpeg backend."""

    live = True
    _what = "stream"

    def __init__(self, url: str, timeout: float = 10.0):
        """Args:
        url: Stream URL, credentials included if the camera needs them.
        timeout: Seconds to wait for the connection and for each frame before giving up.
        """
        super().__init__(url, _redact(url))
        self._timeout_ms = int(timeout * 1000)

    def _open_capture(self) -> cv2.VideoCapture:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, self._timeout_ms]
        return cv2.VideoCapture(str(self._target), cv2.CAP_FFMPEG, params)

    def _hint(self) -> str:
        return "check the URL, the network and the camera's credentials"


class VideoFileSource(_VideoCaptureSource):
    """A recorded video file, read frame by frame (never dropping unless the pipeline is told to)."""

    live = False
    _what = "video file"

    def __init__(self, path: str | Path, fps: float | None = None, loop: bool = False):
        """Args:
        path: Video file OpenCV can decode (mp4, avi, mkv...).
        fps: Frame rate for timestamps when the file does not say (default 10 then).
        loop: Start again at the end, for ever (demos, soak tests); timestamps keep growing.
        """
        path = Path(path)
        if not path.is_file():
            raise SourceError(f"video file {path} does not exist; pass an existing file, a folder or a camera index")
        super().__init__(str(path), str(path))
        self._fps_override = fps
        self._loop = loop
        self._frames_this_pass = 0  # a file with no frames at all must not loop for ever

    def open(self) -> None:
        super().open()
        if self._fps_override:
            self.fps = float(self._fps_override)
        elif not self.fps:
            logger.warning("%s does not say its frame rate; timing events at 10 fps", self.source_id)
            self.fps = 10.0

    def read(self) -> np.ndarray | None:
        image = super().read()
        if image is None and self._loop and self._frames_this_pass and self._capture is not None:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._frames_this_pass = 0
            image = super().read()
        if image is not None:
            self._frames_this_pass += 1
        return image

    def media_time(self, frames_read: int) -> float | None:
        return frames_read / self.fps

    def _hint(self) -> str:
        return "the file is not a video OpenCV can decode (try re-encoding it as H.264 or MJPEG)"


class ImageFolderSource(Source):
    """The images of a folder in name order, as if a camera had taken them at ``fps``.

    With ``photos``, each image is a photo of one item instead (``stills``): the pipeline classifies
    every photo as its own item, whatever its size, with no empty-tray comparison and no voting.
    """

    live = False

    def __init__(self, folder: str | Path, fps: float = 10.0, photos: bool = False):
        """Args:
        folder: Folder of image files (subfolders are ignored).
        fps: Frame rate the images stand for, for timestamps.
        photos: The images are photos of one item each, not frames of one camera.
        """
        self.stills = photos
        self._folder = Path(folder)
        self.source_id = str(self._folder)
        self.fps = float(fps)
        self._paths: list[Path] = []
        self._next = 0

    def open(self) -> None:
        if not self._folder.is_dir():
            raise SourceError(f"image folder {self._folder} does not exist")
        self._paths = sorted(p for p in self._folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not self._paths:
            raise SourceError(f"image folder {self._folder} has no images ({', '.join(sorted(_IMAGE_SUFFIXES))})")
        self._next = 0

    def read(self) -> np.ndarray | None:
        while self._next < len(self._paths):
            path = self._paths[self._next]
            self._next += 1
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is not None:
                return image
            logger.warning("skipping %s: not an image OpenCV can read", path)
        return None

    def media_time(self, frames_read: int) -> float | None:
        return frames_read / self.fps

    def close(self) -> None:
        self._next = len(self._paths)


def _redact(url: str) -> str:
    """The URL without a password, for logs and events."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_source(spec: str | int | Path, fps: float | None = None, loop: bool = False, photos: bool = False) -> Source:
    """Build the source a user names: camera index, stream URL, image folder or video file.

    Args:
        spec: ``0`` / ``"0"`` (camera index), ``rtsp://…`` / ``http://…``, a folder of images
            or a video file.
        fps: Frame rate for timestamps of folders, and of video files that do not say theirs.
        loop: Play a video file again and again.
        photos: A folder holds photos of one item each (see :class:`ImageFolderSource`).

    Returns:
        An unopened source.

    Raises:
        SourceError: ``spec`` names nothing usable.
    """
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        return CameraSource(int(spec))
    text = str(spec)
    if _URL.match(text) and not text.lower().startswith("file://"):
        return StreamSource(text)
    path = Path(text[len("file://") :] if text.lower().startswith("file://") else text)
    if path.is_dir():
        return ImageFolderSource(path, fps or 10.0, photos)
    if path.is_file():
        return VideoFileSource(path, fps, loop)
    raise SourceError(
        f"source {text!r} is not a camera index, a stream URL, a folder or an existing video file; "
        "use e.g. --source 0, --source rtsp://host/stream, --source frames/ or --source video.mp4"
    )
