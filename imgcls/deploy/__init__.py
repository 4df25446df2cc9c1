"""Deployment: any accepted file as a runnable model (``model``), the table of file formats (``formats``; TFLite's,
Core ML's and the browser page's writers in ``tflite``, ``coreml`` and ``web``), parity checks (``parity``),
``export``, INT8 (``quantize``), ``benchmark``, ``predict`` and ``serve`` (with ``api_key`` and
``serve_metrics``); both on Ray with ``ray_cluster``, ``ray_predict`` and ``ray_serve``."""
