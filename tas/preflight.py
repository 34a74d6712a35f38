"""Checks that run before a workflow touches anything: what a job would only find out after Snakemake
had already planned (and deleted) downstream results.

- `verify`/`Verifier`: every existing output of the planned jobs that can be checked is checked before
  Snakemake plans: data arrays against the sizes and checksum their meta.json records, torch files as zip
  archives with torch's data.pkl and intact CRCs (what torch.load reads), JSON files parse. A file verified
  once is remembered by (size, mtime, inode) in .snakemake/tas-verified.json, so a repeat start costs a stat.
- `rebuild_plan`: what is on disk decides what is done. Snakemake rebuilds a missing output only when a job
  it plans needs it, so a deleted intermediate file (a teacher's model.pt, a data array) whose dependents are
  complete went unnoticed ("Nothing to be done") while `dvc status` reported it deleted; and a damaged
  (truncated, rewritten) file looks *newer* than its dependents, so Snakemake would plan them all again,
  deleting their complete outputs before the first of them failed on it. The plan names the jobs to rebuild
  first (their missing and damaged outputs); the workflow (workflow/rules/common.smk) runs them in a first
  pass, and then plans the rest, in which a dependent reruns only when the rebuilt content differs from what
  it was made from (Snakemake compares the inputs' checksums it recorded).
- `missing_inputs`: user files named in params.yaml (local teacher checkpoints, pretrained_file) and
  the raw data of datasets not prepared yet, checked before hours of other jobs run; a local checkpoint
  that is no torch file is named too.

Imports nothing heavy (no torch/numpy at parse time); the raw-data check imports a dataset module only
for a dataset that still needs preparing.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from tas import paths
from tas.config import Config
from tas.data import sources
from tas.errors import TasError


def unreadable_file(path: Path) -> str | None:
    """Why the existing file at `path` cannot be what its job wrote, or None when it can.

    Cheap on purpose (it runs on every Snakemake start): torch.save writes a zip archive whose central
    directory sits at the end, so a truncated copy fails to open; the full CRC pass is left to loading."""
    try:
        if path.stat().st_size == 0:
            return "empty file"
        if path.suffix == ".pt":
            with zipfile.ZipFile(path) as archive:
                if not any(name.endswith("data.pkl") for name in archive.namelist()):
                    return "a zip archive without torch's data.pkl"
        elif path.suffix == ".json":
            json.loads(path.read_text())
    except zipfile.BadZipFile:
        return "truncated or not a torch file"
    except (ValueError, UnicodeDecodeError) as err:
        return f"not valid JSON: {str(err)[:80]}"
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    return None


# ------------------------------------------------------------------------------ full verification

VERIFIED_CACHE = Path(".snakemake") / "tas-verified.json"
_NPY_MAGIC = b"\x93NUMPY"
_CHUNK = 1 << 22


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def npy_header(fh) -> tuple[str, bool, tuple[int, ...]]:
    """(descr, fortran_order, shape) of an open .npy file, read without numpy; the file is left at the data."""
    if fh.read(6) != _NPY_MAGIC:
        raise ValueError("not a .npy file")
    major = fh.read(2)[0]
    size = struct.unpack("<H", fh.read(2))[0] if major == 1 else struct.unpack("<I", fh.read(4))[0]
    header = ast.literal_eval(fh.read(size).decode("latin1"))
    return header["descr"], bool(header["fortran_order"]), tuple(header["shape"])


def _itemsize(descr: str) -> int:
    digits = "".join(ch for ch in descr if ch.isdigit())
    if not digits:
        raise ValueError(f"dtype {descr!r}")
    return int(digits)


def arrays_checksum(folder: Path, names: Iterable[str]) -> str:
    """tas.data.prepare.array_checksum of the .npy files `names` in `folder` (sha256 over each array's name,
    dtype, shape and C-order bytes), streamed from the files without numpy. ValueError when a file is not a
    complete C-order array."""
    digest = hashlib.sha256()
    for name in names:
        with open(folder / f"{name}.npy", "rb") as fh:
            descr, fortran, shape = npy_header(fh)
            if fortran:
                raise ValueError(f"{name}.npy is in Fortran order")
            digest.update(f"{name}:{descr}:{list(shape)}\n".encode())
            need = _itemsize(descr)
            for dim in shape:
                need *= dim
            got = 0
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
                got += len(chunk)
            if got != need:
                raise ValueError(f"{name}.npy holds {got} of its {need} data bytes")
    return digest.hexdigest()


class Verifier:
    """Verifies existing files (data arrays against their meta.json, torch archives, JSON), remembering what
    passed by (size, mtime, inode) in `cache` (None: remember nothing)."""

    def __init__(self, cache: Path | None = VERIFIED_CACHE) -> None:
        self.cache = cache
        self.known: dict[str, str] = {}
        self.changed = False
        if cache is not None:
            try:
                loaded = json.loads(Path(cache).read_text())
                self.known = {k: v for k, v in loaded.items() if isinstance(v, str)} if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.known = {}
        self._datasets: dict[str, dict[str, str]] = {}

    def _remembered(self, path: Path) -> bool:
        try:
            return self.known.get(str(path)) == _stat_key(path)
        except OSError:
            return False

    def _remember(self, path: Path) -> None:
        try:
            self.known[str(path)] = _stat_key(path)
            self.changed = True
        except OSError:
            pass

    def save(self) -> None:
        if self.cache is None or not self.changed:
            return
        try:
            Path(self.cache).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(self.cache).with_name(f".{Path(self.cache).name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.known, sort_keys=True))
            os.replace(tmp, self.cache)
        except OSError:
            pass  # a cache only: the next start verifies again

    def problem(self, path: str | Path) -> str | None:
        """Why the existing file at `path` is not what its job wrote, or None (also for files that cannot be
        checked, e.g. logs)."""
        path = Path(path)
        if path.suffix == ".npy":
            return self._dataset_problems(path.parent).get(path.name)
        if path.suffix == ".json":
            return unreadable_file(path)
        if path.suffix == ".pt":
            why = unreadable_file(path)
            if why or self._remembered(path):
                return why
            try:
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
                return f"its archive does not read back ({str(err)[:80]})"
            if bad is not None:
                return f"damaged: the CRC of {bad} does not match"
            self._remember(path)
            return None
        return None

    def _dataset_problems(self, folder: Path) -> dict[str, str]:
        """{array file name: why} for a prepared dataset folder, checked once against its meta.json."""
        key = str(folder)
        if key in self._datasets:
            return self._datasets[key]
        problems: dict[str, str] = {}
        self._datasets[key] = problems
        meta_path = folder / "meta.json"
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return problems  # no record to check against (the meta.json itself is verified as JSON)
        files = meta.get("files") if isinstance(meta, dict) else None
        if not isinstance(files, dict) or not files:
            return problems
        names = [name for name in files if name.endswith(".npy")]
        present = []
        for name in names:
            path = folder / name
            if not path.is_file():
                continue
            if path.stat().st_size != files[name].get("bytes"):
                problems[name] = (f"damaged: {path.stat().st_size} bytes, its meta.json records "
                                  f"{files[name].get('bytes')} (truncated or rewritten)")
            present.append(path)
        if problems or len(present) != len(names):
            return problems  # a missing array is missing, not damaged; the others are checked once it is back
        if all(self._remembered(p) for p in [*present, meta_path]):
            return problems
        from tas.paths import DATASET_ARRAYS

        try:
            actual = arrays_checksum(folder, DATASET_ARRAYS)
        except (OSError, ValueError, KeyError, SyntaxError) as err:
            for p in present:
                problems[p.name] = f"damaged: {str(err)[:100]}"
            return problems
        if actual != meta.get("checksum"):
            for p in present:
                problems[p.name] = (f"damaged: the arrays' checksum {actual[:12]}... differs from the "
                                    f"{str(meta.get('checksum'))[:12]}... their meta.json records")
            return problems
        for p in (*present, meta_path):
            self._remember(p)
        return problems


@dataclass
class RebuildPlan:
    """Outputs to rebuild before the rest is planned: `missing` ones (their dependents are complete, so
    Snakemake would not rebuild them) and `damaged` ones (rebuilt whatever depends on them)."""

    missing: list[tuple[str, str]] = field(default_factory=list)  # (path, job name)
    damaged: list[tuple[str, str, str]] = field(default_factory=list)  # (path, why, job name)

    @property
    def targets(self) -> list[str]:
        return [p for p, _ in self.missing] + [p for p, _, _ in self.damaged]

    @property
    def forced(self) -> list[str]:
        return [p for p, _, _ in self.damaged]

    def __bool__(self) -> bool:
        return bool(self.missing or self.damaged)

    def lines(self, limit: int = 6) -> list[str]:
        out = [f"{path} ({job}) is missing" for path, job in self.missing]
        out += [f"{path} ({job}) is {why}" for path, why, job in self.damaged]
        if len(out) > limit:
            out = out[:limit] + [f"... and {len(out) - limit} more"]
        return out


def rebuild_plan(jobs: Iterable, verifier: Verifier | None = None) -> RebuildPlan:
    """What must be rebuilt before planning (see the module docstring), from the jobs of tas.matrix."""
    jobs = list(jobs)
    verifier = verifier or Verifier(cache=None)
    producer = {out: job for job in jobs for out in job.outs}
    state: dict[str, dict[str, str | None]] = {}  # job name -> {out: None (fine) | "missing" | why damaged}
    for job in jobs:
        outs = {}
        for out in job.outs:
            path = Path(out)
            if not path.exists():
                outs[out] = "missing"
            elif path.is_file():
                outs[out] = verifier.problem(path)
            else:
                outs[out] = None
        state[job.name] = outs
    complete = {name for name, outs in state.items() if not any(outs.values())}
    has_complete_dependent: set[str] = set()
    for job in jobs:
        if job.name not in complete:
            continue
        for dep in job.inputs:
            upstream = producer.get(dep)
            if upstream is not None:
                has_complete_dependent.add(upstream.name)
    plan = RebuildPlan()
    for job in jobs:
        for out, why in state[job.name].items():
            if why == "missing":
                if job.name in has_complete_dependent:
                    plan.missing.append((out, job.name))
            elif why:
                plan.damaged.append((out, why, job.name))
    verifier.save()
    return plan


def unreadable_outputs(jobs: Iterable) -> list[tuple[str, str, str]]:
    """(path, why, job name) of each existing output of `jobs` (tas.matrix.Job) that cannot be read."""
    bad = []
    for job in jobs:
        for out in job.outs:
            path = Path(out)
            if path.suffix in (".pt", ".json") and path.is_file():
                why = unreadable_file(path)
                if why:
                    bad.append((out, why, job.name))
    return bad


def check_outputs(jobs: Iterable) -> None:
    """One TasError naming the first unreadable output (and how many more) with the two ways out."""
    bad = unreadable_outputs(jobs)
    if not bad:
        return
    path, why, name = bad[0]
    more = f" (and {len(bad) - 1} more unreadable output(s))" if len(bad) > 1 else ""
    raise TasError(f"{path} ({name}) is unreadable: {why}{more}; nothing was run or deleted. Restore it "
                   f"(`dvc checkout --force {path}`: --force, since the damaged file differs from the cache) or run "
                   "`snakemake`, which rebuilds it first")


def missing_inputs(cfg: Config, experiments: Iterable[str], check_data: bool = True) -> list[str]:
    """One line per user file the selected experiments need and cannot find."""
    problems = []
    chosen = [cfg.experiment(e) for e in experiments]
    for exp in chosen:
        for teacher_id in exp.teachers:
            spec = exp.teacher(teacher_id)
            if spec.checkpoint and not paths.is_url(spec.checkpoint) and not Path(spec.checkpoint).is_file():
                problems.append(f"experiments.{exp.id}.teachers.{teacher_id}.checkpoint {spec.checkpoint} not found; "
                                "fix the path (relative to the project root) or give a URL")
            elif (spec.checkpoint and not paths.is_url(spec.checkpoint)
                  and Path(spec.checkpoint).suffix in (".pt", ".pth")):
                why = unreadable_file(Path(spec.checkpoint))
                if why:
                    problems.append(f"experiments.{exp.id}.teachers.{teacher_id}.checkpoint {spec.checkpoint} is "
                                    f"{why}; re-create or re-download it")
            if spec.pretrained and spec.pretrained_file and not Path(spec.pretrained_file).is_file():
                problems.append(f"experiments.{exp.id}.teachers.{teacher_id}.pretrained_file {spec.pretrained_file} "
                                "not found; fix the path, or drop pretrained_file to fetch timm's weights from the hub")
    if check_data:
        for dataset in dict.fromkeys(cfg.protocol_of(exp).dataset for exp in chosen):
            problem = _missing_raw(cfg, dataset)
            if problem:
                problems.append(problem)
    return problems


def _missing_raw(cfg: Config, spec) -> str | None:
    """The prepare job's own error for a dataset whose raw files are absent (None: prepared, or findable)."""
    if paths.dataset_meta(cfg.data_root, spec.id).is_file():
        return None
    return sources.module(spec.source).missing_raw(spec, cfg.data_root)


__all__ = ["unreadable_file", "unreadable_outputs", "check_outputs", "missing_inputs", "Verifier", "RebuildPlan",
           "rebuild_plan", "arrays_checksum", "npy_header", "VERIFIED_CACHE"]
