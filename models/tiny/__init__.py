"""Offline, random-weight stand-ins for the real model repos.

Each builder writes a complete diffusers repo layout (same classes, same file names, same
loader call) at a tiny width, so the exact production loading and inference code runs on a
CPU without the Hugging Face hub.
"""
