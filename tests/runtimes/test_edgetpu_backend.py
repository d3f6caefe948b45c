"""Edge TPU backend pieces that need no device: device strings and the delegate error paths."""

from __future__ import annotations

import pytest

from tillsight.errors import BackendUnavailableError, OptionsError
from tillsight.runtimes.edgetpu import check_device, load_edgetpu_delegate


@pytest.mark.parametrize("device", ["usb", "usb:0", "usb:12", "pci", "pci:1", ":0", ""])
def test_valid_device_strings(device):
    assert check_device(device) == device


@pytest.mark.parametrize("device", ["USB", "usb0", "gpu", "pci:x", "usb:1:2"])
def test_invalid_device_strings_are_clear(device):
    with pytest.raises(OptionsError, match="usb, usb:N, pci, pci:N, :N"):  # bad user input, not a bad bundle
        check_device(device)


def test_missing_runtime_library_names_the_package_and_the_device():
    with pytest.raises(BackendUnavailableError, match=r"libedgetpu-does-not-exist.so.1 is not installed.*libedgetpu1-std.*usb:1"):
        load_edgetpu_delegate("usb:1", library="libedgetpu-does-not-exist.so.1")


def test_library_present_but_no_device_answers():
    """libc loads but is no delegate: the same failure as libedgetpu with no Coral attached."""
    with pytest.raises(BackendUnavailableError, match=r"no Edge TPU answered on 'pci:0'.*plug in the Coral device"):
        load_edgetpu_delegate("pci:0", library="libc.so.6")
