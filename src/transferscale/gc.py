"""`transferscale gc`: delete the feature-cache files a study's spec no longer reads.

The feature cache (STUDY/features/) keeps one file per (model, task, split, layers). Editing a spec can leave
files behind: runs, tasks or task options it no longer has, snapshots now probed at the final layer only,
the features of a checkpoint that was retrained. `collect_garbage` rebuilds the study's plan from the spec
stored with it (the last `transferscale run`), works out the key of every file a protocol would read
(`Protocol.feature_layers`), and removes the rest, with stale temporary files. Nothing else is touched: the
results store, the checkpoints and the files it keeps. A file removed by mistake costs one forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from transferscale.errors import TransferscaleError


@dataclass
class Garbage:
    kept: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)  # removed, or to remove with dry_run
    kept_bytes: int = 0
    removed_bytes: int = 0


def needed_feature_files(study_dir: Path) -> set[str]:
    """The names of the feature-cache files the study's stored spec reads."""
    from transferscale.engine.context import JobContext
    from transferscale.features import FeatureCache
    from transferscale.plan import make_plan
    from transferscale.spec import StudySpec
    from transferscale.store import Store

    with Store(study_dir, create=False) as store:
        meta = store.meta()
    if "spec_json" not in meta:
        raise TransferscaleError(f"the study at {study_dir} has no stored spec yet; run it once first")
    spec = StudySpec.model_validate_json(meta["spec_json"])
    plan = make_plan(spec)
    ctx = JobContext(spec, study_dir)
    cache = FeatureCache(study_dir / "features")
    names: set[str] = set()
    for run in plan.runs:
        identity = ctx.stored_identity(run)
        if identity is None:  # not trained yet: nothing of it can be cached
            continue
        for proto in plan.protocols.values():
            layers = proto.feature_layers(run)
            if layers is None:
                continue
            for task in proto.tasks_for(plan, run):
                for split in ("train", "test"):
                    names.add(cache.path(ctx.feature_cache_key(identity, task, split, layers)).name)
    return names


def collect_garbage(study_dir: str | Path, dry_run: bool = False) -> Garbage:
    """Remove (or, with dry_run, list) the study's feature files that its spec does not read."""
    study_dir = Path(study_dir)
    keep = needed_feature_files(study_dir)
    out = Garbage()
    root = study_dir / "features"
    if not root.is_dir():
        return out
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        size = path.stat().st_size
        if path.name in keep:
            out.kept.append(path)
            out.kept_bytes += size
            continue
        out.removed.append(path)
        out.removed_bytes += size
        if not dry_run:
            path.unlink(missing_ok=True)
    return out
