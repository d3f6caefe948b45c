"""Convert a Keras classifier for any x86-64 CPU kiosk (full-int8 TFLite, 2 threads).

python samples/convert_for_x86.py model.keras --calibration train.txt --eval val.txt --labels labels.txt
"""

from conversion_script import convert_family, parse_args

if __name__ == "__main__":
    raise SystemExit(convert_family(parse_args(__doc__.splitlines()[0], ["generic-x86-cpu"])))
