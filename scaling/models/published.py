"""Published weights as pre-training points: which files a study needs, finding them offline, fetching them.

A source's `published` points (scaling.config.PublishedWeights) are not trained: each resolves, per rung, to a
weights file -- timm's release in the local Hugging Face cache (`weights: hf`, with HF_HUB_OFFLINE=1 so that
nothing is looked up online), or a file path such as Google's BiT-S `.npz` (which timm does not publish).
`resolve` runs in the data stage, on the driver, before Ray starts: a missing file stops the study with the
repository or path and the command that fetches it, and a file that does not fit its rung with the tensors that
differ. `download` is that command's work, on a login node.
"""
from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from scaling.files import publishing
from scaling.models import ladders
from scaling.models.ladders import ModelError
from scaling.models.weights import check_weights, fetch_hub, hub_file

#: the command that fetches what a config needs (named in errors)
DOWNLOAD = "python -m scaling.models download --config <this study's config>"


def check_tags(ladder: str, sizes: list[str], tag: str) -> None:
    """ValueError unless timm publishes weights under `tag` (empty: the ladder's own) for every rung in `sizes`."""
    for name in sizes:
        r = ladders.rung(ladder, name)
        wanted = tag or r.hub_tag
        if wanted is None:
            raise ValueError(f"{ladder}/{name} has no published weights on the Hugging Face hub; give a weights "
                             "file instead (weights: /path/{model}.pt)")
        tags = ladders.published_tags(r)
        if wanted not in tags:
            raise ValueError(f"timm publishes no weights {r.arch}.{wanted} for {ladder}/{name}; its tags: "
                             f"{', '.join(tags)}")


def needed(cfg) -> list[tuple[str, object, str]]:
    """(source role, PublishedWeights, rung name) for every published file the study uses."""
    return [(role, point, model) for role, ref in cfg.data.sources.items() for point in ref.published
            for model in cfg.models.sizes]


def resolve(cfg, hf_cache: str | Path | None = None) -> dict[tuple[str, int, str], str]:
    """{(role, images, rung): weights file} for every published point, found offline; ModelError listing every
    missing file (repository or path) and the download command, and every file that does not fit its rung."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # a cache miss must not turn into a download on a compute node
    found, missing = {}, []
    for role, point, model in needed(cfg):
        r = ladders.rung(cfg.models.ladder, model)
        try:
            if point.weights == "hf":
                path = hub_file(r, hf_cache, tag=point.tag or None, command=DOWNLOAD)
            else:
                path = Path(point.weights.format(model=model))
                if not path.is_file():
                    raise ModelError(f"weights file {path} of {cfg.models.ladder}/{model} does not exist; "
                                     + (f"run `{DOWNLOAD}` on a machine with internet (it fetches "
                                        f"{point.url.format(model=model)})" if point.url else "copy it there"))
                check_weights(cfg.models.ladder, model, path)  # hub files are that rung's own release
        except ModelError as e:
            missing.append(f"data.sources.{role} published {point.name!r}: {e}")
            continue
        found[(role, point.images, model)] = str(path.resolve())
    if missing:
        raise ModelError("published weights missing or unusable:\n  " + "\n  ".join(missing))
    return found


def download_for_config(cfg, hf_cache: str | Path | None = None) -> list[Path]:
    """Fetch exactly the published weights `cfg` needs (needs internet): timm's from the Hugging Face hub into
    the cache, files from their `url`. Files already present are kept."""
    paths = []
    for role, point, model in needed(cfg):
        r = ladders.rung(cfg.models.ladder, model)
        if point.weights == "hf":
            path = fetch_hub(r.hub_repo(point.tag or None), hf_cache)
        else:
            path = Path(point.weights.format(model=model))
            if not path.is_file():
                if not point.url:
                    raise ModelError(f"data.sources.{role} published {point.name!r}: {path} does not exist "
                                     "and no url is configured to fetch it from")
                path.parent.mkdir(parents=True, exist_ok=True)
                url = point.url.format(model=model)
                with publishing(path) as tmp:  # a broken download never stands at `path`
                    try:
                        urllib.request.urlretrieve(url, tmp)
                    except OSError as e:  # urllib's URLError and HTTPError are OSErrors
                        raise ModelError(f"cannot fetch {url} for data.sources.{role} published "
                                         f"{point.name!r}: {e}") from e
        print(f"{role} {point.name} {cfg.models.ladder}/{model}: {path}", flush=True)
        paths.append(path)
    return paths
