"""Stock diffusers against openreel's runner on one endpoint: per-stage median time and peak
memory, the openreel/stock ratio, the transformer's TFLOP/s and the frame difference.

    python scripts/bench_gpu.py --preset full --endpoint fal-ai/cogvideox-5b --steps 50   # on a GPU
    python scripts/bench_gpu.py --preset tiny --steps 2 --width 64 --height 48           # harness check

The same as `openreel bench`; docs/performance.md ("GPU speed") says what to run and how to read it.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.bench import main  # noqa: E402 - after the repository root is importable

if __name__ == "__main__":
    main()
