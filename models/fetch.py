"""``openreel fetch-weights``: the ``full`` preset's repos, downloaded into the Hugging Face cache.

Workers load the ``full`` preset from that cache, so a GPU host fetches once (it needs the
internet then) and serves without it. Only the files an endpoint loads are fetched: the
image-to-video repo contributes its transformer alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from huggingface_hub import snapshot_download
from huggingface_hub.utils import enable_progress_bars
from tqdm import tqdm

from openreel.settings import Settings
from pipelines.registry import Endpoint, Weights


def weights_of(endpoints: Iterable[Endpoint], settings: Settings | None = None) -> list[Weights]:
    """Each repo once, as ``settings`` name it; a repo wanted whole by one endpoint is fetched whole."""
    patterns: dict[str, set[str] | None] = {}
    for endpoint in endpoints:
        for weights in endpoint.weights:
            repo = getattr(settings, weights.setting) if settings is not None and weights.setting else weights.repo
            known = patterns.get(repo, set())
            if weights.patterns is None or known is None:
                patterns[repo] = None
            else:
                patterns[repo] = known | set(weights.patterns)
    return [Weights(repo, None if wanted is None else tuple(sorted(wanted))) for repo, wanted in patterns.items()]


def fetch_weights(
    endpoints: Iterable[Endpoint],
    download: Callable[..., str] | None = None,
    report: Callable[[str], None] = tqdm.write,
    settings: Settings | None = None,
) -> list[Path]:
    """Each repo with a bar over the repos; the hub adds its bars per file (tens of gigabytes
    must visibly move), undoing a library's earlier switching them off."""
    download = download or snapshot_download
    enable_progress_bars()
    paths = []
    for weights in tqdm(weights_of(endpoints, settings), desc="repositories", unit="repo"):
        what = "all files" if weights.patterns is None else ", ".join(weights.patterns)
        report(f"fetching {weights.repo} ({what})")
        paths.append(Path(download(weights.repo, allow_patterns=list(weights.patterns) if weights.patterns else None)))
        report(f"  {paths[-1]}")
    return paths
