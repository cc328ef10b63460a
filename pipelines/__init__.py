"""One folder per endpoint family: its fal schema (torch-free) and its runner (torch).

Importing this package, or any ``schema`` module in it, must never import torch: the API
process validates requests with these schemas.
"""
