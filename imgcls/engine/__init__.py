"""The engine: the training loop (``loop``), training state (``state``, ``seeds``), phases and ``fit``, the budget
plan (``plan``, ``budget``), the feature cache (``features``), torchrun (``distributed``), and what users run on
it: ``train``, ``evaluate``, ``tune`` and ``check``."""
