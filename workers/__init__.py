"""GPU (or CPU) worker processes: RQ workers that keep pipelines loaded and run requests."""
