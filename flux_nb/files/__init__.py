"""Files on disk: the formats flux-nb writes and reads, and the folders it keeps.

Recipes inside PNG/JPEG/WebP (and A1111 text), thumbnails and contact sheets, the last few
pictures read back, input images and their store, the append-only journal, and the output folder.
Imports only from core.
"""
