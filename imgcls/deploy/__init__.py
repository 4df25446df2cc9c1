"""Deployment: the table of file formats (``formats``), parity checks (``parity``), ``export``, INT8
(``quantize``), ``benchmark``, ``predict`` and ``serve``."""
