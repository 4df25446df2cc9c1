"""The engine: the training loop (``loop``), training state (``state``), phases and ``fit``, the one
inference path (``inference``), runtimes (``runners``), the feature cache (``features``), torchrun
(``distributed``), and the three things users run on it: ``train``, ``evaluate`` and ``tune``."""
