"""openreel: a self-hosted, fal-compatible inference server for video generation.

This package holds what every process shares and that imports no torch: settings, request
records, queues, storage, API keys, the embedded Redis and the command line.
"""
