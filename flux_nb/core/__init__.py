"""The bottom room: what every other part of flux-nb stands on, and nothing of ours below it.

One error tree, status names, settings, the option table, the validated Recipe with the model's
bundled request schema, files written whole or not at all, text drawn the same on every Pillow,
and whether a process is alive. No I/O beyond reading the schema; no third-party import heavier
than Pillow.
"""
