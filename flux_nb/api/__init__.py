"""Oxen's HTTP API as the client sees it: requests, retries, the event stream, prices.

Imports only from core: it knows the contract, not the notebook or the files.
"""
