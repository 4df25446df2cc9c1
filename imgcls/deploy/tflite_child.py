"""ONNX -> TFLite with onnx2tf and TensorFlow. Run as a child process by ``imgcls.deploy.tflite``, never imported.

Why a separate process: importing TensorFlow and then triton (which torch loads lazily) crashes the process,
and importing onnx2tf changes process-wide state (all warnings off, the recursion limit, random seeds) and
calls sys.exit on some errors. The imgcls process never imports TensorFlow; this script imports nothing
from imgcls.

usage: python tflite_child.py '{"onnx": ..., "workdir": ..., "outputs": [NAME, ...], "fp32": OUT, "int8": OUT,
                               "calibration": NPY}'
"""

import json
import os
import sys


def main(args: dict) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # onnx2tf downloads a sample-image file for any 3-channel 4-D input unless it finds one in the working
    # folder; the parent wrote one there, so conversion never needs the network.
    os.chdir(args["workdir"])
    import numpy as np
    import onnx2tf
    import tensorflow as tf

    keras_model = onnx2tf.convert(
        input_onnx_file_path=args["onnx"], output_folder_path=os.path.join(args["workdir"], "tf"),
        disable_model_save=True, not_use_onnxsim=True, non_verbose=True, verbosity="error",
        replace_to_pseudo_operators=["erf"])  # exact GELU as TFLite builtins (lower case, or it is ignored)
    spec = keras_model.inputs[0]
    names = list(keras_model.output_names)   # onnx2tf names each Keras output after its ONNX output
    if sorted(names) != sorted(args["outputs"]):
        sys.exit(f"onnx2tf named the outputs {names}, not {args['outputs']}")

    def named(x):
        # A dict keyed by the ONNX output names: the file's signature then names each output, and readers map by
        # name, whatever order the converter leaves the output tensors in.
        out = keras_model(x)
        return dict(zip(names, out if isinstance(out, (list, tuple)) else [out], strict=True))

    function = tf.function(named, input_signature=[tf.TensorSpec(spec.shape, tf.float32, name="images")])
    # From the concrete function, not from the Keras model: the same file, much faster to convert. Without the
    # model as its trackable object the file gets no signature, and so no output names.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function.get_concrete_function()], keras_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if args.get("fp32"):
        with open(args["fp32"], "wb") as f:
            f.write(converter.convert())
    if args.get("int8"):
        calibration = np.load(args["calibration"])  # NHWC, already normalised as the model expects
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([calibration[i:i + 1]] for i in range(len(calibration)))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        with open(args["int8"], "wb") as f:
            f.write(converter.convert())


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
