"""Deployment: any accepted file as a runnable model (``model``), the table of file formats (``formats``; TFLite's
and Core ML's converters in ``tflite`` and ``coreml``), parity checks (``parity``), ``export``, INT8
(``quantize``), ``benchmark``, ``predict`` and ``serve``."""
