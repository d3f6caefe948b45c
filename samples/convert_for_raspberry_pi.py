"""Convert a Keras classifier for Raspberry Pi 4 and 5 (full-int8 TFLite, XNNPACK, 4 threads).

    python samples/convert_for_raspberry_pi.py model.keras --calibration train.txt --eval val.txt --labels labels.txt

Copy ``out/bundles/raspberry-pi-4/`` to the Pi and run it there with ``pip install
tillsight[tflite]`` (no TensorFlow on the device) and ``tillsight run BUNDLE --source 0``.
"""

from conversion_script import convert_family, parse_args

if __name__ == "__main__":
    raise SystemExit(convert_family(parse_args(__doc__.splitlines()[0], ["raspberry-pi-4", "raspberry-pi-5"])))
