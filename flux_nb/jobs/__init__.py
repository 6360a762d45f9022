"""Work in flight: the Generation handle, the runner that moves it, and the Session that
owns them.

A Generation is what a user holds; the runner enqueues, listens, polls and downloads; lineage and
sweeps build on Generations; the Session (one per kernel) picks the backend, starts the embedded
server when there is no key, and resumes what a restarted kernel left. No IPython, no ipywidgets.
"""
