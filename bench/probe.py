"""A process that only runs one model: cold start, peak RSS and latency, printed as one JSON line.

Run by ``run_benchmarks.py`` as a fresh process for each measurement:

    python bench/probe.py tillsight BUNDLE IMAGE --threads 2 --runs 200
    python bench/probe.py bare MODEL.tflite IMAGE --threads 2 --size 96 --runs 200

Both modes run at the threads given, so a bundle and a plain model are timed the same way.

``tillsight`` loads a bundle with ``tillsight.load`` and classifies the image; ``bare`` is
what a user would write by hand with ai-edge-litert alone (OpenCV resize, uint8 input,
``Interpreter.invoke``). ``first_result_unix`` lets the parent compute process start to
first result; ``peak_rss_bytes`` is the process's high-water mark.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from baselines import timed  # the same timing loop as the in-process baselines and the package

from tillsight._benchmark_worker import peak_rss_bytes


def run_tillsight(bundle: str, image_path: str, runs: int, threads: int) -> dict:
    import cv2

    import tillsight

    classifier = tillsight.load(bundle, threads=threads)
    image = cv2.imread(image_path)
    top = classifier.classify(image, top_k=1)[0]
    first = time.time()
    tensor = classifier.prepare(image)
    latency = timed(lambda: classifier.infer(tensor), runs, warmup=0)
    return {"first_result_unix": first, "label": top.label, "engine": classifier.engine, **latency}


def run_bare(model: str, image_path: str, runs: int, threads: int, size: int) -> dict:
    import cv2
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=model, num_threads=threads)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    image = cv2.cvtColor(cv2.resize(cv2.imread(image_path), (size, size)), cv2.COLOR_BGR2RGB)
    interpreter.set_tensor(input_index, image[np.newaxis].astype(np.uint8))
    interpreter.invoke()
    top = int(np.argmax(interpreter.get_tensor(output_index)))
    first = time.time()
    latency = timed(interpreter.invoke, runs, warmup=0)
    return {"first_result_unix": first, "label": top, "engine": "ai_edge_litert (bare)", **latency}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["tillsight", "bare"])
    parser.add_argument("model", help="bundle directory (tillsight) or .tflite file (bare)")
    parser.add_argument("image")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    if args.mode == "tillsight":
        result = run_tillsight(args.model, args.image, args.runs, args.threads)
    else:
        result = run_bare(args.model, args.image, args.runs, args.threads, args.size)
    result["peak_rss_bytes"] = peak_rss_bytes()
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
