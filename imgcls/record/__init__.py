"""The record: what imgcls writes to disk and reads back.

``files`` (run folders, atomic writes), ``checkpoint`` (self-describing weights), ``results``
(results.json / results.csv), ``predictions`` (predictions CSV files) and ``cache`` (where caches live).
Each kind of file has exactly one writer and one reader here.
"""
