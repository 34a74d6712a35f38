"""The job matrix (tas.matrix) and its two views: the Snakefile and the generated dvc.yaml.

Nothing here trains: Snakemake runs dry (`-n`), and the one real run (`test_fake_run_*`) puts a fake
`python` first on PATH that writes each job's declared outputs after checking its declared inputs exist.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tas import matrix, paths
from tas.config import load_config
from tas.dvcyaml import dvc_stages
from tas.engine.gpu_slots import acquire_gpus
from tas.errors import TasError

ROOT = Path(__file__).resolve().parent.parent
PARAMS = ROOT / "params.yaml"
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN)) or shutil.which("snakemake")
DVC = shutil.which("dvc", path=str(BIN)) or shutil.which("dvc")
needs_snakemake = pytest.mark.skipif(SNAKEMAKE is None, reason="snakemake is not installed")
needs_dvc = pytest.mark.skipif(DVC is None, reason="dvc is not installed")

# Teacher-free runs (scratch) are one per student: mini has 3 pairs but 2 students, cifar100 12 pairs but 5 students.
MINI = {"prepare_arrays": 1, "train_teacher": 2, "prepare_run": 3, "distill": 9, "distill_student": 2,
        "evaluate_teacher": 2, "evaluate_run": 9, "evaluate_student_run": 2, "tables": 1}
CIFAR100 = {"prepare_arrays": 1, "load_teacher": 4, "prepare_run": 12, "distill": 84, "distill_student": 5,
            "evaluate_teacher": 4, "evaluate_run": 84, "evaluate_student_run": 5, "tables": 1}


def cfg_for(*experiments: str, overrides=()):
    return load_config(PARAMS, overrides, experiments=list(experiments) or None)


def env_with_tools() -> dict:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONDONTWRITEBYTECODE="1")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


# ------------------------------------------------------------------------------ expansion


def test_mini_expansion_counts():
    cfg = cfg_for()
    assert cfg.selected == ("mini",)
    exp = cfg.experiment("mini")
    assert (len(exp.teachers), len(exp.pairs), len(exp.methods)) == (2, 3, 4)
    assert Counter(j.rule for j in matrix.expand(cfg)) == MINI


def test_cifar100_expansion_counts():
    jobs = matrix.expand(cfg_for("cifar100"))
    assert Counter(j.rule for j in jobs) == CIFAR100
    assert sum(1 for j in jobs if j.subcommand == "evaluate") == 4 + 84 + 5


def test_scratch_runs_once_per_student_shared_by_its_pairs():
    cfg = cfg_for("cifar100")
    exp = cfg.experiment("cifar100")
    jobs = matrix.expand(cfg)
    scratch = [j for j in jobs if j.subcommand == "distill" and j.wildcards["method"] == "scratch"]
    assert len(scratch) == 5 and {j.rule for j in scratch} == {"distill_student"}
    assert sorted(j.wildcards["student"] for j in scratch) == sorted(exp.students)
    r18 = matrix.find_job(cfg, "distill_student",
                          {"experiment": "cifar100", "student": "r18", "method": "scratch", "seed": 0})
    assert r18.command[-6:] == ("--student", "r18", "--method", "scratch", "--seed", "0")
    assert r18.outs[0] == "results/cifar100/runs/r18/scratch/seed0/model.pt"
    assert not [d for d in r18.inputs if "/teachers/" in d or "/prepared/" in d]
    # no teacher keys: the run does not depend on any teacher
    assert not {f"models.{t}" for t in exp.teachers} & set(r18.params)
    ev = matrix.find_job(cfg, "evaluate_student_run",
                         {"experiment": "cifar100", "student": "r18", "method": "scratch", "seed": 0})
    assert ev.outs == ("results/cifar100/eval/runs/r18/scratch/seed0.json",)
    assert not [d for d in ev.inputs if "/teachers/" in d]
    # the tables read the shared run for the 3 pairs with student r18; no pair-level scratch run exists
    tables = matrix.find_job(cfg, "tables", {"experiment": "cifar100"})
    assert ev.outs[0] in tables.inputs and "results/cifar100/runs/r18/scratch/seed0/history.csv" in tables.inputs
    assert not [o for j in jobs for o in j.outs if re.search(r"/runs/[a-z0-9_]+-[a-z0-9_]+/scratch/", o)]
    with pytest.raises(TasError, match="not a job"):
        matrix.find_job(cfg, "distill",
                        {"experiment": "cifar100", "pair": "swin_t-r18", "method": "scratch", "seed": 0})
    kd = [j for j in jobs if j.rule == "distill" and j.wildcards["method"] == "kd"]
    assert len(kd) == len(exp.pairs)


def test_a_teacher_change_reruns_pair_runs_only():
    base = {j.name: j.params_hash for j in matrix.expand(cfg_for("cifar100"))}
    changed = {j.name: j.params_hash for j in matrix.expand(cfg_for("cifar100", overrides=["models.swin_t.name=Swin"]))}
    differs = {name for name in base if base[name] != changed[name]}
    assert "distill@cifar100/swin_t-r18/kd/seed0" in differs
    assert not {n for n in differs if "/scratch/" in n}
    assert "distill@cifar100/r18/scratch/seed0" in base


def _output_regex(cfg, rule: str, pattern: str) -> re.Pattern:
    """A rule's output pattern as Snakemake matches it: each wildcard with the rule's constraint."""
    constraints = {**matrix.WILDCARD_CONSTRAINTS, **matrix.rule_constraints(cfg, rule)}
    parts, seen = re.split(r"\{(\w+)\}", pattern), set()
    regex = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex += re.escape(part)
        else:
            regex += f"(?P={part})" if part in seen else f"(?P<{part}>{constraints[part]})"
            seen.add(part)
    return re.compile(regex)


@pytest.mark.parametrize("experiments", [("mini",), ("cifar100", "imagenet", "ablation")])
def test_every_output_matches_exactly_its_own_rule(experiments):
    cfg = cfg_for(*experiments)
    regexes = [(rule, _output_regex(cfg, rule, pattern)) for rule in matrix.RULES
               for pattern in matrix.output_patterns(cfg, rule).values()]
    for job in matrix.expand(cfg):
        for out in job.outs:
            hits = {rule: m.groupdict() for rule, m in ((r, rx.fullmatch(out)) for r, rx in regexes) if m}
            assert list(hits) == [job.rule], f"{out}: matched by {list(hits)}"
            assert hits[job.rule] == dict(job.wildcards)
    # a student id never looks like a pair id (no '-') and vice versa; on top of that, a teacher-free
    # method is never matched under a pair, nor a teacher method under a bare student
    student_re, pair_re = matrix.WILDCARD_CONSTRAINTS["student"], matrix.WILDCARD_CONSTRAINTS["pair"]
    assert not re.fullmatch(student_re, "tiny_cnn-tiny_vit") and not re.fullmatch(pair_re, "tiny_vit")
    outs = dict(regexes)
    assert not outs["distill"].fullmatch(_p_run("mini", "tiny_cnn-tiny_vit", "scratch"))
    assert not outs["distill_student"].fullmatch(_p_run("mini", "tiny_vit", "kd"))


def _p_run(experiment: str, owner: str, method: str) -> str:
    return (paths.run_dir("results", experiment, owner, method, 0) / "model.pt").as_posix()


def test_prepare_data_is_shared_between_experiments():
    jobs = matrix.expand(cfg_for("cifar100", "ablation"))
    prepares = [j for j in jobs if j.subcommand == "prepare-data"]
    assert [j.wildcards["dataset"] for j in prepares] == ["cifar100"]
    assert prepares[0].experiment is None
    assert sum(j.rule == "tables" for j in jobs) == 2
    # imagenet prepares an index (meta.json only), not arrays
    (imagenet,) = [j for j in matrix.expand(cfg_for("imagenet")) if j.subcommand == "prepare-data"]
    assert imagenet.rule == "prepare_index" and imagenet.outs == ("data/imagenet/meta.json",)


@pytest.mark.parametrize("experiments", [("mini",), ("cifar100",), ("cifar100_32",), ("imagenet",), ("ablation",),
                                         ("mini", "cifar100", "cifar100_32", "imagenet", "ablation")])
def test_outputs_unique_and_dependencies_closed(experiments):
    cfg = cfg_for(*experiments)
    jobs = matrix.expand(cfg)
    idx = matrix.Index(jobs)  # raises on a duplicate name or an output written by two jobs
    assert len(idx.by_name) == len(jobs)
    produced_before: set[str] = set()
    persist = {p for j in jobs for p in j.persist}
    for job in jobs:
        assert job.name == matrix.job_name(job.rule, job.wildcards)
        assert not persist & set(job.outs), job.name
        assert set(job.metrics) | set(job.plots) <= set(job.outs)
        assert set(job.uncached) <= set(job.outs)
        for dep in job.inputs:
            if dep in job.external:
                continue
            # every data dependency is the output of a job listed earlier: closed and in topological order
            assert dep in produced_before, f"{job.name}: {dep} is produced by no earlier job"
        for dep in job.code:
            assert (ROOT / dep).exists(), dep
        produced_before.update(job.outs)
        for key in job.params:
            node = cfg.raw
            for part in key.split("."):
                node = node[part]  # KeyError = a listed key that params.yaml lacks (DVC would fail)
    # the final targets are tables
    assert set(matrix.targets(cfg)) == {o for j in jobs if j.subcommand == "tables" for o in j.outs}


def test_job_contents_mini():
    cfg = cfg_for()
    idx = matrix.index(cfg)
    scratch = idx.find("distill_student", {"experiment": "mini", "student": "tiny_vit", "method": "scratch", "seed": 0})
    kd = idx.find("distill", {"experiment": "mini", "pair": "tiny_cnn-tiny_vit", "method": "kd", "seed": "0"})
    tas = idx.find("distill", {"experiment": "mini", "pair": "tiny_cnn-tiny_vit", "method": "tas", "seed": "0"})
    teacher_model = "results/mini/teachers/tiny_cnn/model.pt"
    assistant = ["results/mini/prepared/tiny_cnn-tiny_vit/tas.json"]
    assert teacher_model not in scratch.inputs and "models.tiny_cnn" not in scratch.params
    assert (scratch.name == "distill@mini/tiny_vit/scratch/seed0"
            and scratch.dvc_name == "distill--mini--tiny_vit--scratch--seed0")
    assert scratch.persist == ("results/mini/runs/tiny_vit/scratch/seed0/ckpt",)
    assert scratch.log == "logs/snakemake/distill_student/mini/tiny_vit/scratch/seed0.log"
    assert teacher_model in kd.inputs and not set(assistant) & set(kd.inputs)
    assert teacher_model in tas.inputs and set(assistant) <= set(tas.inputs)
    assert kd.command == ("python", "-m", "tas", "distill", "--params", "params.yaml", "--experiment", "mini",
                          "--pair", "tiny_cnn-tiny_vit", "--method", "kd", "--seed", "0")
    assert ("--threads" not in kd.command and kd.subcommand in matrix.THREADED_SUBCOMMANDS
            and kd.threads == cfg.runtime.threads)
    assert kd.name == "distill@mini/tiny_cnn-tiny_vit/kd/seed0"
    assert kd.dvc_name == "distill--mini--tiny_cnn-tiny_vit--kd--seed0"
    assert kd.persist == ("results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/ckpt",)
    assert kd.metrics == ("results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/metrics.json",)
    assert kd.plots == ("results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/history.csv",)
    assert {"methods.kd", "models.tiny_vit", "recipes.mini", "experiments.mini.student_recipes.vit",
            "datasets.synthetic", "protocols.mini"} <= set(kd.params)
    assert kd.gpus == cfg.experiment("mini").gpus_per_job
    assert not any(f.startswith("tas/report/") for f in kd.code) and "tas/models/stages.py" in kd.code
    assert "tas/distillers/kd.py" in kd.code and "tas/distillers/tas.py" not in kd.code
    teacher = idx.find("train_teacher", {"experiment": "mini", "teacher": "tiny_cnn"})
    assert {"recipes.mini_teacher", "experiments.mini.teachers.tiny_cnn"} <= set(teacher.params)
    # runtime.upsample_on changes numbers only where images are streamed from a folder: not here.
    assert "runtime.device" in kd.params and "runtime.upsample_on" not in kd.params
    streamed = matrix.expand(cfg_for("imagenette_mini", overrides=["datasets.imagenette.cache=false"]))
    assert all("runtime.upsample_on" in j.params for j in streamed if "runtime.device" in j.params)
    assert any(j.subcommand == "distill" for j in streamed if "runtime.upsample_on" in j.params)
    ev = idx.find("evaluate_run", {"experiment": "mini", "pair": "tiny_cnn-tiny_vit", "method": "kd", "seed": 0})
    assert ev.gpus == 1 and ev.command[3] == "evaluate" and ev.outs == ev.metrics
    assert ({"results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/model.pt", "results/mini/teachers/tiny_cnn/metrics.json"}
            <= set(ev.inputs))
    tables = idx.find("tables", {"experiment": "mini"})
    assert tables.directories == tables.outs == ("results/mini/tables", "results/mini/plots")
    assert tables.gpus == 0 and "tas/report/tables.py" in tables.code and "tas/engine/trainer.py" not in tables.code
    assert "results/mini/runs/tiny_cnn-tiny_vit/kd/seed0/metrics.json" in tables.inputs  # provenance.csv reads it
    assert "results/mini/teachers/tiny_cnn/metrics.json" in tables.inputs
    assert matrix.job_for_output(cfg, "results/mini/teachers/tiny_cnn/model.pt") is teacher
    assert matrix.job_for_output(cfg, "nowhere.txt") is None
    with pytest.raises(TasError, match="not a job"):
        idx.find("distill", {"experiment": "mini", "pair": "tiny_cnn-tiny_vit", "method": "kd", "seed": 7})


def test_teacher_checkpoint_is_an_external_input():
    cfg = cfg_for("cifar100", overrides=["experiments.cifar100.teachers.swin_t.checkpoint=ckpt/swin_t_cifar100.pth"])
    job = matrix.find_job(cfg, "load_teacher", {"experiment": "cifar100", "teacher": "swin_t"})
    assert job.external == ("ckpt/swin_t_cifar100.pth",) and "ckpt/swin_t_cifar100.pth" in job.inputs


def test_a_teacher_checkpoint_url_is_a_param_not_an_input():
    cfg = cfg_for("cifar100")
    job = matrix.find_job(cfg, "load_teacher", {"experiment": "cifar100", "teacher": "swin_t"})
    assert cfg.experiment("cifar100").teacher("swin_t").checkpoint.startswith("https://")
    assert job.external == () and not any("://" in d for d in job.deps)
    assert "experiments.cifar100.teachers.swin_t" in job.params


def test_params_hash_follows_the_keys_a_job_reads():
    base = {j.name: j.params_hash for j in matrix.expand(cfg_for())}
    changed = {j.name: j.params_hash for j in matrix.expand(cfg_for(overrides=["recipes.mini.epochs=9"]))}
    differs = {name for name in base if base[name] != changed[name]}
    # the student recipe changes the 11 runs and their 11 evals (eval batch size), nothing else
    assert len(differs) == 22 and all(n.startswith(("distill@", "evaluate@mini/tiny_")) for n in differs)
    assert not any(n.startswith(("train-teacher@", "tables@", "prepare-data@")) for n in differs)


# ------------------------------------------------------------------------------ dvc.yaml


def test_committed_dvc_yaml_is_not_stale(tmp_path):
    committed = ROOT / "dvc.yaml"
    assert committed.is_file(), "dvc.yaml is missing: run `python -m tas dvc-yaml`"
    from tas.dvcyaml import write_dvc_yaml

    fresh = write_dvc_yaml(cfg_for(), tmp_path / "dvc.yaml")
    assert fresh.read_text() == committed.read_text(), "dvc.yaml is stale: run `python -m tas dvc-yaml` and commit it"


def test_dvc_stages_mirror_jobs():
    cfg = cfg_for()
    stages = dvc_stages(cfg)
    jobs = matrix.expand(cfg)
    assert list(stages) == [j.dvc_name for j in jobs]
    for job in jobs:
        stage = stages[job.dvc_name]
        assert stage["cmd"] == shlex.join(job.command)
        assert stage["deps"] == list(job.deps)
        assert stage["params"] == [{"params.yaml": list(job.params)}]
        listed = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        listed += [next(iter(m)) for m in stage.get("metrics", [])] + [next(iter(p)) for p in stage.get("plots", [])]
        # ckpt/ (job.persist) is no DVC out: never pushed, never "deleted" in a clone
        assert sorted(listed) == sorted(job.outs)
        for out in stage.get("outs", []):
            if isinstance(out, dict):
                ((path, opts),) = out.items()
                assert opts["cache"] is False
                assert opts.get("persist", False) == (path in job.persist)


# ------------------------------------------------------------------------------ Snakemake


def parse_dry_run(text: str) -> list[dict]:
    """Jobs of `snakemake -n -p` output: rule, output, input, wildcards, resources, shell command."""
    jobs, current = [], None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            current = {"rule": m.group(1), "output": [], "input": [], "wildcards": {}, "resources": {}, "shell": None}
            jobs.append(current)
            continue
        if current is None:
            continue
        m = re.match(r"^    (\w+): (.*)$", line)
        if m:
            key, value = m.groups()
            if key in ("output", "input"):
                current[key] = [v for v in value.split(", ") if v]
            elif key in ("wildcards", "resources"):
                current[key] = dict(item.split("=", 1) for item in value.split(", ") if "=" in item)
            else:
                current[key] = value
        elif line.startswith("Shell command: "):
            current["shell"] = line[len("Shell command: "):]
    return jobs


def snakemake(*args: str, cwd: Path = ROOT, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env_with_tools(), capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def job_stats(text: str) -> dict[str, int]:
    block = text.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    out = {}
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            out[m.group(1)] = int(m.group(2))
    return out


def strip_tool_suffix(shell: str, job: matrix.Job) -> str:
    """Snakemake's command = Job.shell [+ ' --threads N'] + ' > log 2>&1' [+ the echo of a training job's result]."""
    echo = f" && (grep ' done ' {job.log} | tail -n 1 || true)"
    if job.rule in matrix.TRAINING_RULES:
        assert shell.endswith(echo), shell
        shell = shell[: -len(echo)]
    tail = f" > {job.log} 2>&1"
    assert shell.endswith(tail), shell
    shell = shell[: -len(tail)]
    if job.subcommand in matrix.THREADED_SUBCOMMANDS:
        shell, _, threads = shell.rpartition(" --threads ")
        assert int(threads) >= 1
    return shell


@needs_snakemake
def test_snakemake_dag_equals_dvc_yaml():
    """Same jobs, same commands, same inputs and outputs in both tools, for the default selection."""
    proc = snakemake("-n", "-F", "-p", "--cores", "8", "--resources", "gpu=4")
    planned = [j for j in parse_dry_run(proc.stdout + proc.stderr) if j["rule"] != "all"]
    cfg = cfg_for()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    jobs = {j.name: j for j in matrix.expand(cfg)}
    assert len(planned) == len(jobs) == len(stages)
    seen = set()
    for sm in planned:
        job = matrix.find_job(cfg, sm["rule"], sm["wildcards"])
        seen.add(job.name)
        stage = stages[job.dvc_name]
        assert strip_tool_suffix(sm["shell"], job) == stage["cmd"] == job.shell
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
        outs += [next(iter(m)) for m in stage.get("metrics", [])] + [next(iter(p)) for p in stage.get("plots", [])]
        assert sorted(sm["output"]) == sorted(set(outs) - set(job.persist)) == sorted(job.outs)
        data_deps = [d for d in stage.get("deps", []) if d not in job.code]
        assert sorted(sm["input"]) == sorted(data_deps) == sorted(job.inputs)
        assert int(sm["resources"].get("gpu", 0)) == job.gpus
        assert sm.get("log") == job.log and sm.get("benchmark") == job.benchmark
    assert seen == set(jobs)
    # Scheduling: teachers before assistants before training runs before the short evaluations.
    priority = {}
    for sm in planned:
        priority.setdefault(sm["rule"], set()).add(int(sm.get("priority", 0)))
    assert all(len(values) == 1 for values in priority.values()), priority
    first = {rule: values.pop() for rule, values in priority.items()}
    assert first["train_teacher"] > first["prepare_run"] > first["distill"] == first["distill_student"]
    assert first["distill"] > max(first[r] for r in first
                                  if r.startswith(("evaluate", "tables", "prepare_arrays", "prepare_index")))


@needs_snakemake
def test_snakemake_plans_the_cifar100_paper_study_without_data():
    # -F: plan every job whatever this checkout already holds; no data needs to exist for the plan.
    proc = snakemake("-n", "-F", "--config", "experiment=cifar100", "--cores", "8", "--resources", "gpu=4")
    stats = job_stats(proc.stdout + proc.stderr)
    assert stats == {**CIFAR100, "all": 1}


@needs_snakemake
def test_snakemake_config_selects_a_list_and_rejects_other_keys():
    proc = snakemake("-n", "-F", "--config", "experiment=[cifar100,ablation]", "--cores", "2")
    stats = job_stats(proc.stdout + proc.stderr)
    assert stats["prepare_arrays"] == 1 and stats["tables"] == 2 and stats["distill"] == 84 + 10
    assert stats["distill_student"] == 5  # ablation runs no teacher-free method
    bad = snakemake("-n", "--config", "experiment=nope", "--cores", "1", check=False)
    assert bad.returncode != 0 and "unknown experiment 'nope'" in bad.stdout + bad.stderr
    bad = snakemake("-n", "--config", "paths={data: elsewhere}", "--cores", "1", check=False)
    assert bad.returncode != 0 and "may only set `experiment`" in bad.stdout + bad.stderr


# ------------------------------------------------------------------------------ GPU slots

# Loads gpu_slots.py (and tas/errors.py) without importing the tas package, whose import pulls in torch.
STUB_IMPORT = textwrap.dedent("""\
    import importlib.util, os, sys, types
    def load_gpu_slots(root):
        pkg = types.ModuleType("tas"); pkg.__path__ = []; sys.modules["tas"] = pkg
        for name in ("errors", "engine.gpu_slots"):
            spec = importlib.util.spec_from_file_location("tas." + name, os.path.join(root, "tas", *name.split(".")) + ".py")
            mod = importlib.util.module_from_spec(spec); sys.modules["tas." + name] = mod; spec.loader.exec_module(mod)
        return sys.modules["tas.engine.gpu_slots"].acquire_gpus
""")  # noqa: E501 - generated code, kept byte for byte

HOLDER = STUB_IMPORT + textwrap.dedent("""
    import json, time
    acquire_gpus = load_gpu_slots({root!r})
    with acquire_gpus({k}, total={total}, lock_dir={lock_dir!r}, timeout={timeout}, poll=0.05) as held:
        print(json.dumps({{"slots": held.slots, "env": os.environ.get("CUDA_VISIBLE_DEVICES")}}), flush=True)
        time.sleep({hold})
""")


def spawn_holder(lock_dir, k=1, total=4, hold=1.0, timeout=10):
    code = HOLDER.format(root=str(ROOT), k=k, total=total, lock_dir=str(lock_dir), timeout=timeout, hold=hold)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def test_gpu_slots_concurrent_processes_get_distinct_slots(tmp_path):
    procs = [spawn_holder(tmp_path, k=1, total=4, hold=2.0) for _ in range(4)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    slots = sorted(s for r in results for s in r["slots"])
    assert slots == [0, 1, 2, 3]
    assert all(r["env"] == str(r["slots"][0]) for r in results)


def test_gpu_slots_k2_exhaustion_and_restore(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with acquire_gpus(2, total=4, lock_dir=tmp_path, timeout=0) as a:
        assert a.slots == (0, 1) and os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")  # as in another process (the env is per process)
        with acquire_gpus(2, total=4, lock_dir=tmp_path, timeout=0) as b:
            assert b.slots == (2, 3)
            monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
            start = time.monotonic()
            with pytest.raises(TasError, match=r"no 1 free GPU slot\(s\) of 4 after 0 s"):
                with acquire_gpus(1, total=4, lock_dir=tmp_path, timeout=0.3, poll=0.05):
                    pass
            assert time.monotonic() - start >= 0.3  # it waited before failing
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with pytest.raises(TasError, match="needs 5 GPU"):
        with acquire_gpus(5, total=4, lock_dir=tmp_path, timeout=0):
            pass


def test_gpu_slots_wait_for_a_release(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    holder = spawn_holder(tmp_path, k=4, total=4, hold=1.0)
    assert json.loads(holder.stdout.readline())["slots"] == [0, 1, 2, 3]
    start = time.monotonic()
    with acquire_gpus(1, total=4, lock_dir=tmp_path, timeout=20, poll=0.05) as held:
        assert held.slots == (0,)
    assert time.monotonic() - start > 0.3
    holder.wait(timeout=30)


def test_gpu_slots_cpu_and_preset_devices(tmp_path, monkeypatch):
    import tas.engine.gpu_slots as gs

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("TAS_GPU_SLOTS", raising=False)
    monkeypatch.setattr(gs, "_driver_gpu_count", lambda: 0)
    with acquire_gpus(1, lock_dir=tmp_path, timeout=0) as a, acquire_gpus(2, lock_dir=tmp_path, timeout=0) as b:
        assert a.devices is None and b.devices is None  # CPU: nothing to pin, slots still distinct
        assert a.slots == (0,) and b.slots == (1, 2)
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    with acquire_gpus(0, lock_dir=tmp_path) as none:
        assert none.slots == ()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # e.g. a Slurm allocation or a restricted box
    with acquire_gpus(1, lock_dir=tmp_path, timeout=0) as a:
        assert a.devices == ("3",) and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # as another job would see it
        with acquire_gpus(1, lock_dir=tmp_path, timeout=0) as b:
            assert b.devices == ("5",) and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"


# ------------------------------------------------------------------------------ a fake full run

# Stands in for `python` in job commands: `-m tas ...` looks the command up in the job list, checks the
# declared inputs exist, holds GPU slots like the real CLI (failing at once when Snakemake overcommits)
# and writes the declared outputs; anything else runs the real interpreter.
FAKE_PYTHON = "#!{python}\n" + STUB_IMPORT.replace("{", "{{").replace("}", "}}") + textwrap.dedent("""\
    import json, shlex, time, zipfile
    argv = sys.argv[1:]
    if argv[:2] != ["-m", "tas"]:
        os.execv({python!r}, [{python!r}, *argv])
    if "--threads" in argv:
        i = argv.index("--threads")
        argv = argv[:i] + argv[i + 2:]
    jobs = json.load(open(os.environ["TAS_FAKE_JOBS"]))
    job = jobs[shlex.join(["python", *argv])]
    missing = [d for d in job["inputs"] if not os.path.exists(d)]
    if missing:
        sys.exit("fake tas: missing inputs " + ", ".join(missing))
    acquire = load_gpu_slots(".")
    with acquire(job["gpus"], total=int(os.environ["TAS_FAKE_GPUS"]), timeout=0):
        time.sleep(0.05 if job["gpus"] else 0)
        for d in job["persist"]:
            os.makedirs(d, exist_ok=True)
            open(os.path.join(d, "last.pt"), "w").write("resume")
        for out in job["outs"]:
            if out in job["directories"]:
                os.makedirs(out, exist_ok=True)
                name = "main.csv" if out.endswith("tables") else "curves.png"
                open(os.path.join(out, name), "w").write("a,b\\n1,2\\n")
            else:
                os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
                if out.endswith(".pt"):  # the layout of a torch.save file, which the pipeline's preflight checks
                    with zipfile.ZipFile(out, "w") as archive:
                        archive.writestr("archive/data.pkl", job["cmd"])
                else:
                    open(out, "w").write(json.dumps({{"top1": 1.0, "cmd": job["cmd"]}}) if out.endswith(".json") else job["cmd"] + "\\n")
""")  # noqa: E501 - generated code, kept byte for byte


@pytest.fixture(scope="module")
def fake_project(tmp_path_factory):
    """A git + DVC copy of the project (code, params, Snakefile, workflow, dvc.yaml) and a fake `python`."""
    if SNAKEMAKE is None or DVC is None:
        pytest.skip("snakemake and dvc are needed")
    root = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "tas", root / "tas", ignore=ignore)
    shutil.copytree(ROOT / "workflow", root / "workflow", ignore=ignore)
    for name in ("Snakefile", "params.yaml", "dvc.yaml", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, root / name)
    (root / ".gitignore").write_text("/fakebin/\n/jobs.json\n.snakemake/\n/logs/\n/benchmarks/\n/.tas/\n/report.html\n"
                                     "__pycache__/\n")
    fakebin = root / "fakebin"
    fakebin.mkdir()
    (fakebin / "python").write_text(FAKE_PYTHON.format(python=sys.executable))
    (fakebin / "python").chmod(0o755)
    jobs = {job.shell: {"cmd": job.shell, "inputs": job.inputs, "outs": list(job.outs), "persist": list(job.persist),
                        "directories": list(job.directories), "gpus": job.gpus}
            for job in matrix.expand(cfg_for())}
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = env_with_tools()
    env.update(PATH=f"{fakebin}{os.pathsep}{env['PATH']}", TAS_FAKE_JOBS=str(root / "jobs.json"), TAS_FAKE_GPUS="2",
               TAS_GPU_LOCK_DIR=str(root / ".tas" / "gpu-slots"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env.pop("CUDA_VISIBLE_DEVICES", None)

    def run(*cmd, check=True):
        proc = subprocess.run(list(cmd), cwd=root, env=env, capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                                 f"{proc.stderr[-4000:]}")
        return proc

    run("git", "init", "-q")
    run("git", "add", "-A")
    run("git", "commit", "-qm", "init")
    run(DVC, "init", "-q")
    shutil.copy2(ROOT / ".dvc" / "config", root / ".dvc" / "config")  # the project's DVC settings (cache links)
    run("git", "add", "-A")
    run("git", "commit", "-qm", "dvc init")
    return root, run


@pytest.mark.slow
def test_fake_run_snakemake_then_dvc_then_restore(fake_project):
    root, run = fake_project
    output = lambda proc: proc.stdout + proc.stderr  # noqa: E731
    # 1. Snakemake runs every job (2 GPU slots; a job finding no free slot would fail at once).
    proc = run(SNAKEMAKE, "--cores", "4", "--resources", "gpu=2")
    assert "(100%) done" in output(proc)
    assert (root / "results/mini/tables/main.csv").is_file()
    assert (root / "results/mini/teachers/tiny_cnn/ckpt/last.pt").is_file()
    # 2. The HTML report takes the tables and plots.
    run(SNAKEMAKE, "--report", "report.html", "--cores", "1")
    assert (root / "report.html").stat().st_size > 10_000
    # 3. DVC adopts the outputs of the outside run: after `dvc commit -f`, everything is up to date.
    run(DVC, "commit", "-f", "-q")
    assert "up to date" in run(DVC, "status").stdout
    # 4. A fresh clone + `dvc pull`/`dvc checkout` has no .snakemake/ metadata and arbitrary mtimes: an input
    #    newer than its outputs made Snakemake plan reruns until `snakemake --touch`; now the Snakefile records
    #    as done what dvc.lock vouches for (issue 23, workflow/rules/common.smk), so no --touch step is needed.
    shutil.rmtree(root / ".snakemake")
    now = time.time()
    for tree, age in (("results", 3600), ("data", 60)):  # outputs restored before their inputs
        for path in (root / tree).rglob("*"):
            os.utime(path, (now - age, now - age))
    assert "Nothing to be done" in output(run(SNAKEMAKE, "-n", "--cores", "1"))
    assert "up to date" in run(DVC, "status").stdout


def test_released_teachers_are_loaded_not_trained_and_a_mixed_id_is_trained():
    cfg = cfg_for("cifar100")
    rules = {j.rule for j in matrix.expand(cfg)}
    assert "load_teacher" in rules and "train_teacher" not in rules
    assert matrix.rule_constraints(cfg, "train_teacher") == {"teacher": matrix.NO_MATCH_RE}
    # swin_t loaded in cifar100 but fine-tuned in a second selected experiment: one rule for the id
    mixed = cfg_for("cifar100", "ablation", overrides=["experiments.ablation.teachers.swin_t.epochs=3"])
    teachers = [j for j in matrix.expand(mixed) if j.subcommand in ("train-teacher", "load-teacher")]
    assert {j.rule for j in teachers if j.wildcards["teacher"] == "swin_t"} == {"train_teacher"}
    assert {j.rule for j in teachers if j.wildcards["teacher"] != "swin_t"} == {"load_teacher"}


def test_adding_a_run_seed_reruns_nothing_that_exists_but_the_process_count_reruns_training():
    base = {j.name: j.params_hash for j in matrix.expand(cfg_for())}
    more_seeds = {j.name: j.params_hash for j in matrix.expand(cfg_for(overrides=["experiments.mini.seeds=[0,1,2]"]))}
    assert {n for n in base if more_seeds[n] != base[n]} == {"tables@mini"}  # teachers, assistants, seed-0 runs stay
    assert len(more_seeds) > len(base)
    two_gpus = {j.name: j.params_hash for j in matrix.expand(cfg_for(overrides=["experiments.mini.gpus_per_job=2"]))}
    changed = {n.split("@")[0] for n in base if two_gpus[n] != base[n]}
    assert changed == {"train-teacher", "distill"}  # the recipe's batch size is per process
