"""Convert a Keras classifier for Intel kiosk PCs: OpenVINO IR for the iGPU (NUC Iris Xe: INT8, Celeron UHD: FP16).

    python samples/convert_for_intel.py model.keras --calibration train.txt --eval val.txt --labels labels.txt

Run on the kiosk with ``pip install tillsight[openvino]``; the bundle picks the iGPU and
falls back to the CPU where the profile allows it.
"""

from conversion_script import convert_family, parse_args

import tillsight


def report(bundle: tillsight.Bundle) -> None:
    runtime = bundle.manifest.runtime
    fallbacks = ", ".join(runtime.options.get("device_fallbacks", [])) or "none"
    print(
        f"  OpenVINO {bundle.manifest.quantization.get('precision', '?')} for {runtime.device or 'AUTO'} (fallbacks: {fallbacks})"
    )


if __name__ == "__main__":
    raise SystemExit(convert_family(parse_args(__doc__.splitlines()[0], ["intel-nuc-iris-xe", "intel-celeron-uhd"]), report))
