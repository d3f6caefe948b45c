"""Convert a Keras classifier for the Coral Edge TPU (USB Accelerator and Dev Board).

    python samples/convert_for_coral.py model.keras --calibration train.txt --eval val.txt --labels labels.txt

Each bundle holds the int8 model and tillsight's preflight report: which ops the Edge TPU
takes and where the graph would split. Where ``edgetpu_compiler`` is installed the bundle
is compiled during the conversion; otherwise compile it there later with
``tillsight compile-edgetpu BUNDLE``.
"""

from conversion_script import convert_family, parse_args

import tillsight


def report(bundle: tillsight.Bundle) -> None:
    preflight = bundle.manifest.target_report.get("edgetpu_preflight", {})
    compiled = bool(bundle.manifest.runtime.options.get("edgetpu_model"))
    print(
        f"  Edge TPU: {preflight.get('ops_on_tpu', '?')}/{preflight.get('ops_total', '?')} ops map; "
        + (
            "compiled."
            if compiled
            else f"not compiled here: run 'tillsight compile-edgetpu {bundle.path}' where the compiler is."
        )
    )


if __name__ == "__main__":
    raise SystemExit(convert_family(parse_args(__doc__.splitlines()[0], ["coral-usb", "coral-devboard"]), report))
