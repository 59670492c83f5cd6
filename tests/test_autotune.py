"""The autotune CLI (tmoe-autotune) and the autotune cache (schema, lookup, fallbacks, runtime hook).

CPU: the CLI runs end to end under the Triton interpreter on a tiny workload (wall-clock timing).
"""
import copy
import json
import os
import subprocess
import sys
import types
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import tmoe
from tmoe.autotune import cache, cli
from tmoe.kernels import configs, grouped_gemm
from tmoe.kernels.configs import CODE_RING_DEPTHS, GemmConfig

ON_GPU = torch.cuda.is_available()
REPO = Path(__file__).resolve().parent.parent
TINY = dict(num_experts=4, hidden=64, intermediate=32, topk=2)
TINY_ARGS = ["--num-experts", "4", "--hidden", "64", "--intermediate", "32", "--topk", "2"]
FAKE_GPU = "Fake GPU 9000 80GB"
GPU_CFG = GemmConfig(64, 128, True, 8, 4, "arith")          # wgmma-eligible, not what the heuristic picks


@pytest.fixture(autouse=True)
def _fresh_memory_cache():
    cache.clear_memory_cache()
    yield
    cache.clear_memory_cache()


def _entry(cfg, us):
    return {"config": cfg.as_dict(), "us": us}


def _doc(device=FAKE_GPU, kernel="gemm1", buckets=None, **over):
    buckets = buckets or {"1": {"best": _entry(GPU_CFG, 10.0), "runner_up": _entry(GemmConfig(16, 64, True), 11.0)}}
    doc = cache.make_document(device=device, kernel=kernel, buckets=buckets, **TINY)
    doc.update(over)
    return doc


def _write_raw(root: Path, doc: dict) -> Path:
    path = cache.doc_path(doc, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


# ----------------------------------------------------------------------------- the CLI, end to end
@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One CLI run (interpreter on CPU): tiny workload, tokens 1 and 8, two candidates, both kernels."""
    out = tmp_path_factory.mktemp("autotune_cli")
    rc = cli.main([*TINY_ARGS, "--tokens", "1,8", "--max-candidates", "2", "--output-dir", str(out),
                   "--progress", "plain", "--reps", "3"])
    return rc, out


def test_cli_end_to_end_and_show(cli_run, capsys, monkeypatch):
    rc, out = cli_run
    assert rc == 0
    device = torch.cuda.get_device_name() if ON_GPU else "cpu"
    for kernel in ("gemm1", "gemm2"):
        path = out / cache.device_dir_name(device) / f"{kernel}_E4_H64_I32_K2_w4a8.json"
        doc = cache.load(path)
        assert doc["kernel"] == kernel and doc["device"] == device and doc["triton"] == cache.running_versions()["triton"]
        assert sorted(doc["buckets"], key=int) == ["1", "8"]
        for bucket in doc["buckets"].values():
            assert bucket["tried"] == 2 and bucket["discarded"] == 0
            assert bucket["runner_up"] is not None and bucket["runner_up"]["us"] >= bucket["best"]["us"]
    capsys.readouterr()
    assert cli.main(["--show", "--output-dir", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "gemm1_E4_H64_I32_K2_w4a8.json" in shown and "gemm2_E4_H64_I32_K2_w4a8.json" in shown
    assert "T=    8" in shown
    if not ON_GPU:
        assert "no GPU" in shown
    monkeypatch.setenv(cache.ENV_VAR, str(out))            # --show defaults to the cache dir
    assert cli.main(["--show"]) == 0
    assert "gemm2_E4_H64_I32_K2_w4a8.json" in capsys.readouterr().out


def test_cli_progress_lines_show_best_so_far(tmp_path, capsys):
    assert cli.main([*TINY_ARGS, "--tokens", "2", "--kernels", "gemm2", "--max-candidates", "2",
                     "--output-dir", str(tmp_path), "--progress", "plain"]) == 0
    err = capsys.readouterr().err
    assert "[gemm2 T=2 1/2]" in err and "[gemm2 T=2 2/2]" in err and "| best " in err


def test_shipped_cache_files_are_valid(cli_run):
    """Every file under autotune_cache/ passes the schema and sits at the path its content names; the
    directory may hold no files yet, so a document written by the CLI is checked too."""
    root = cache.REPO_CACHE_DIR
    shipped = []
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.is_file():
                assert entry.name == "README.md", f"unexpected file {entry} (files go to <device>/<name>.json)"
                continue
            assert entry.name != cache.CPU_DEVICE, "interpreter (CPU) tuning results must not be shipped"
            for path in sorted(entry.iterdir()):
                assert path.suffix == ".json", f"unexpected file {path}"
                shipped.append(path)
    _, out = cli_run
    produced = sorted(out.glob("*/*.json"))
    assert produced, "the CLI run wrote no document"
    for path, base in [(p, root) for p in shipped] + [(p, out) for p in produced]:
        doc = cache.load(path)
        assert cache.doc_path(doc, base) == path, f"{path} holds {doc['kernel']} for {doc['device']!r}"
        assert set(doc["buckets"]) and all(int(b) >= 1 for b in doc["buckets"])
        if doc["device"] != cache.CPU_DEVICE:
            for bucket in doc["buckets"].values():
                configs.check_gpu_config(cache.config_from_dict(bucket["best"]["config"]))


def test_cli_errors(capsys):
    for kernels, msg in (("quant", "no tunables yet"), ("gemm1,combine", "no tunables yet"),
                         ("dispatch", "no tunables yet"), ("gemm3", "unknown kernel")):
        with pytest.raises(SystemExit) as exc:
            cli.main([*TINY_ARGS, "--kernels", kernels])
        assert exc.value.code == 2
        assert msg in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--tokens", "1"])
    assert "--workload" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*TINY_ARGS, "--hidden", "48"])
    assert "multiple of 32" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    assert "no tunables yet" in text and "--time-budget" in text and "--max-candidates" in text


def test_cli_time_budget_stops_cleanly(tmp_path, capsys):
    assert cli.main([*TINY_ARGS, "--tokens", "1", "--time-budget", "1e-9", "--output-dir", str(tmp_path)]) == 0
    assert "stopped" in capsys.readouterr().out
    assert not list(tmp_path.glob("*/*.json"))


def test_cli_list_candidates_and_workloads(capsys):
    assert cli.main(["--workload", "dsv3", "--tokens", "1,8192", "--max-candidates", "3", "--list-candidates"]) == 0
    text = capsys.readouterr().out
    assert "gemm1 T=1: 3 of" in text and "gemm2 T=8192: 3 of" in text
    args = cli.build_parser().parse_args(["--workload", "v4flash", "--hidden", "1024"])
    assert cli.resolve_shape(args) == (256, 6, 1024, 2048, 10.0)
    args = cli.build_parser().parse_args(["--workload", "v4flash", "--clamp", "none"])
    assert cli.resolve_shape(args)[4] is None


def test_python_m_autotune_runs_in_a_fresh_process(tmp_path):
    """`python -m tmoe.autotune` (on CPU it re-runs itself under TRITON_INTERPRET=1 when needed)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    run = lambda *a: subprocess.run([sys.executable, "-m", "tmoe.autotune", *a], env=env, cwd=REPO,  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    r = run("--help")
    assert r.returncode == 0 and "tmoe-autotune" in r.stdout, r.stderr
    r = run(*TINY_ARGS, "--tokens", "1", "--kernels", "gemm2", "--max-candidates", "1", "--output-dir",
            str(tmp_path), "--progress", "none")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(list(tmp_path.glob("*/gemm2_E4_H64_I32_K2_w4a8.json"))) == 1


def test_pyproject_declares_script_and_optional_tqdm():
    import tomllib
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["tmoe-autotune"] == "tmoe.autotune.cli:main"
    assert any(d.startswith("tqdm") for d in meta["optional-dependencies"]["autotune"])
    assert not any(d.startswith("tqdm") for d in meta["dependencies"])


# ----------------------------------------------------------------------------- search space + invariance
def test_candidate_space():
    for kernel in ("gemm1", "gemm2"):
        for t in (1, 8, 128, 8192):
            gpu = cli.candidate_space(kernel, t, num_experts=256, hidden=7168, intermediate=2048, topk=8, soft=False)
            assert gpu[0] == configs.heuristic_config(kernel, t * 8, 256, False)
            assert len(set(gpu)) == len(gpu) > 10
            for cfg in gpu:
                configs.check_gpu_config(cfg)          # never a config that changes results bitwise
            soft = cli.candidate_space(kernel, t, soft=True, **TINY)
            assert soft[0] == configs.heuristic_config(kernel, t * 2, 4, True)
            assert {(c.block_m, c.block_n, c.num_warps, c.num_stages) for c in soft} <= {
                (m, n, 1, 1) for m in (16, 32) for n in (32, 64)}
            assert len(set(soft)) == len(soft) == 8
    assert "block_k" not in GemmConfig.__dataclass_fields__      # the reduction order is not a tunable


def test_candidate_space_hopper_order_and_overlap():
    """On Hopper: the heuristic (Gluon) first, then the Triton heuristic, then every Gluon candidate before
    the other Triton ones; overlapped 8-warp 128-token tiles only where 128-token tiles fit the rows."""
    for kernel in ("gemm1", "gemm2"):
        for t in (8, 2048, 8192):
            space = cli.candidate_space(kernel, t, num_experts=256, hidden=7168, intermediate=2048, topk=8,
                                        soft=False, hopper=True)
            assert space[0].kernel == "gluon" and space[1] == configs.heuristic_config(kernel, t * 8, 256, False)
            kinds = [c.kernel for c in space[2:]]
            assert kinds == sorted(kinds, key=lambda k: k != "gluon")
            overlap = [c for c in space if c.overlap]
            assert all(c.block_m == 128 and c.num_warps == 8 and c.num_stages >= 3 for c in overlap)
            assert bool(overlap) == (t >= 2048)
            # Gluon tiles of 16-64 tokens N-block-major, the others by tile size (NOTES "v19")
            assert all(c.grid_n_fastest == (c.block_m >= 16) for c in space if c.kernel == "gluon")


def test_seed_current_picks_times_the_cached_config_second(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    cache.clear_memory_cache()
    space = cli.candidate_space("gemm1", 128, soft=False, **TINY)
    current = space[-1]
    cache.save(_doc(buckets={"100": {"best": _entry(current, 5.0), "runner_up": None}}))
    spaces = {("gemm1", 128): list(space), ("gemm1", 4096): list(space)}
    cli.seed_current_picks(spaces, FAKE_GPU, 4, 64, 32, 2)
    for t in (128, 4096):                     # the nearest bucket serves every token count
        assert spaces[("gemm1", t)][:2] == [space[0], current] and len(spaces[("gemm1", t)]) == len(space)
    untouched = {("gemm1", 128): list(space)}
    cli.seed_current_picks(untouched, "Some Other GPU", 4, 64, 32, 2)     # no file for that device
    assert untouched[("gemm1", 128)] == space
    cache.clear_memory_cache()


def test_seed_current_picks_adds_variants_of_a_gluon_pick(tmp_path, monkeypatch):
    """A Gluon pick is followed by its other n_blocks variants (channel blocks per program), its other
    prefetch depths (a 4-warp pick: the shared-memory code rings too), its sub_block_m variants, the three-quarter
    body and the TMA ring toggled."""
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    cache.clear_memory_cache()
    space = cli.candidate_space("gemm1", 128, soft=False, hopper=True, **TINY)
    current = replace(next(c for c in space[1:] if c.kernel == "gluon"), n_blocks=2)
    cache.save(_doc(buckets={"100": {"best": _entry(current, 5.0), "runner_up": None}}))
    spaces = {("gemm1", 128): list(space)}
    cli.seed_current_picks(spaces, FAKE_GPU, 4, 64, 32, 2)
    seeded = spaces[("gemm1", 128)]
    rings = [replace(current, prefetch=d) for d in CODE_RING_DEPTHS] if current.num_warps == 4 else []
    # ... and each ring with one activation stage more than its depth (what the ring really hides, NOTES "v22")
    rings += ([replace(current, prefetch=d, num_stages=d + 1) for d in CODE_RING_DEPTHS if d + 1 != current.num_stages]
              if current.num_warps == 4 else [])
    subs = []       # a narrower second token body in the pick's tile, and in one twice as large
    for kw in (dict(sub_block_m=current.block_m // 2), dict(block_m=2 * current.block_m, sub_block_m=current.block_m)):
        try:
            subs.append(replace(current, **kw))
        except ValueError:
            pass
    assert subs, current
    for kw in (dict(three_quarter=not current.three_quarter),     # the three-quarter body toggled (valid for a
               dict(num_stages=3, tma_b=not current.tma_b)):         # plain-K-loop pick...), the TMA ring toggled
        try:
            subs.append(replace(current, **kw))
        except ValueError:
            pass
    order = [replace(current, n_fastest=not current.grid_n_fastest)]     # then the other grid order
    # ... with each other K loop (plain, the rings) for a 4-warp pick: the two choices compound (NOTES "v21")
    combos = ([replace(current, prefetch=d, n_fastest=not current.grid_n_fastest)
               for d in (1,) + CODE_RING_DEPTHS if d != current.prefetch] if current.num_warps == 4 else [])
    groups = [replace(current, group_m=g) for g in (2, 4)] if current.grid_n_fastest else []   # grouped tiles
    head = 5 + len(rings) + len(subs) + 1 + len(combos) + len(groups)
    assert seeded[:head] == [space[0], current, replace(current, n_blocks=1), replace(current, n_blocks=4),
                             replace(current, prefetch=2)] + rings + subs + order + combos + groups
    # the n_blocks=1 variant was there already
    assert len(seeded) == len(set(seeded)) == (len(space) + 3 + len(rings) + len(subs) + 1 + len(combos)
                                               + len(groups))
    cache.clear_memory_cache()


@pytest.fixture(scope="module")
def tiny_problem(device):
    weights = cli.random_weights(4, 64, 32, device, seed=3)
    problem = cli.TuningProblem(weights, 8, 2, device=device, seed=3)
    yield problem
    problem.close()


def test_tuning_cannot_change_results(tiny_problem, device, monkeypatch):
    """Two different candidates, same inputs: bitwise-equal GEMM outputs and layer outputs."""
    p = tiny_problem
    calls = []
    real = grouped_gemm.gemm1_swiglu
    monkeypatch.setattr(grouped_gemm, "gemm1_swiglu", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    for kernel in ("gemm1", "gemm2"):
        cands = cli.candidate_space(kernel, p.t, soft=not ON_GPU, **TINY)
        a, b = cands[0], cands[-1]
        assert a != b
        outs = []
        for cfg in (a, b):
            p.poison(kernel)
            p.run(kernel, cfg)
            diff, nan = p.check(kernel)
            assert not nan and diff <= 1e-4, (cfg, diff)
            outs.append(p.output(kernel).clone())
        assert torch.equal(outs[0], outs[1]), f"{kernel}: {a} vs {b}"
        if kernel == "gemm1":
            p.restore_intermediate()
    assert calls and all("block_k" not in kw for kw in calls)      # launched with the fixed BLOCK_K
    monkeypatch.undo()
    # the whole layer, each GEMM with two different tuned configs
    from tmoe.layer import fill_buffer
    w1, w1_sf, w2, w2_sf = p.weights
    l1, l2 = tmoe.transform_weights_for_mega_moe((w1, w1_sf), (w2, w2_sf), backend="triton")
    x = torch.randn(p.t, 64, generator=torch.Generator().manual_seed(5)).to(torch.bfloat16).to(device)
    ys = []
    for i in (0, -1):
        buf = tmoe.get_symm_buffer_for_mega_moe(None, 4, p.t, 2, 64, 32, device=device, backend="triton")
        fill_buffer(buf, x, p.idx, p.tw)
        y = torch.full((p.t, 64), float("nan"), dtype=torch.bfloat16, device=device)
        tmoe.fp8_fp4_mega_moe(y, l1, l2, buf,
                              gemm1_config=cli.candidate_space("gemm1", p.t, soft=not ON_GPU, **TINY)[i],
                              gemm2_config=cli.candidate_space("gemm2", p.t, soft=not ON_GPU, **TINY)[i])
        ys.append(y)
    assert torch.equal(ys[0].view(torch.int16), ys[1].view(torch.int16))


class _Corrupting:
    """Wraps a TuningProblem; after running `bad` it perturbs the output (scale, or flip one bit)."""

    def __init__(self, problem, bad, how):
        self.p, self.bad, self.how = problem, bad, how

    def __getattr__(self, name):
        return getattr(self.p, name)

    def run(self, kernel, cfg):
        self.p.run(kernel, cfg)
        if cfg == self.bad:
            out = self.p.output(kernel)
            if self.how == "scale":
                out.copy_((out.view(torch.bfloat16) * 3).view(torch.int16))
            else:
                nonzero = torch.nonzero(out.view(torch.bfloat16).float().abs() > 0)[0]
                out[tuple(nonzero)] ^= 1


@pytest.mark.parametrize("how,expect", [("scale", "WRONG OUTPUT, calc_diff = "), ("bit", "differs bitwise")])
def test_wrong_candidate_is_discarded_loudly(tiny_problem, how, expect, capsys):
    cands = cli.candidate_space("gemm2", tiny_problem.t, soft=not ON_GPU, **TINY)[:3]
    problem = _Corrupting(tiny_problem, cands[1], how)
    progress = cli.Progress(len(cands), "gemm2 T=8", "plain")
    res = cli.tune_bucket(problem, "gemm2", cands, soft=not ON_GPU, reps=2, warmup=0, tolerance=1e-4,
                          deadline=None, progress=progress)
    assert res["tried"] == 3 and res["discarded"] == 1
    assert [c for _, c in res["timed"]] and cands[1] not in [c for _, c in res["timed"]]
    err = capsys.readouterr().err
    line = next(l for l in err.splitlines() if l.startswith("WARNING"))
    assert expect in line and repr(cands[1]) in line
    doc = cli.bucket_document(res)
    assert doc["discarded"] == 1 and cache.config_from_dict(doc["best"]["config"]) != cands[1]


def test_tune_bucket_deadline(tiny_problem):
    cands = cli.candidate_space("gemm1", 8, soft=not ON_GPU, **TINY)
    res = cli.tune_bucket(tiny_problem, "gemm1", cands, soft=not ON_GPU, reps=1, warmup=0, tolerance=1e-4,
                          deadline=0.0, progress=cli.Progress(len(cands), "x", "none"))
    assert res == {"timed": [], "tried": 0, "discarded": 0, "stopped": True}
    assert cli.bucket_document(res) is None


def test_progress_uses_tqdm_when_importable(monkeypatch, capsys):
    made = []

    class FakeBar:
        def __init__(self, **kw):
            self.kw, self.n, self.postfix, self.closed = kw, 0, None, False
            made.append(self)

        def set_postfix_str(self, s, refresh=True):
            self.postfix = s

        def update(self, n):
            self.n += n

        def write(self, s, file=None):
            print(s, file=file)

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    p = cli.Progress(2, "gemm1 T=1", "auto")
    p.update(GemmConfig(16, 32, False, 1, 1), 5.0)
    p.update(GemmConfig(32, 32, False, 1, 1), 7.0)
    p.close()
    bar = made[0]
    assert bar.n == 2 and bar.closed and "best 5.0 us" in bar.postfix and "bm=16" in bar.postfix
    monkeypatch.setitem(sys.modules, "tqdm", None)               # not installed: plain fallback
    p = cli.Progress(1, "gemm1 T=1", "auto")
    assert p.mode == "plain"
    p.update(GemmConfig(16, 32, False, 1, 1), 5.0)
    assert "[gemm1 T=1 1/1]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="tqdm"):
        cli.Progress(1, "x", "tqdm")


# ----------------------------------------------------------------------------- schema
@pytest.mark.parametrize("mutate,field", [
    (lambda d: d.pop("triton"), "'triton'"),
    (lambda d: d.update(schema=2), "'schema'"),
    (lambda d: d.update(kernel="quant"), "'kernel'"),
    (lambda d: d.update(hidden=48), "'hidden'"),
    (lambda d: d.update(topk=0), "'topk'"),
    (lambda d: d.update(dtype="bf16"), "'dtype'"),
    (lambda d: d.update(date="yesterday"), "'date'"),
    (lambda d: d.update(colour="red"), "'colour'"),
    (lambda d: d.update(num_experts="4"), "'num_experts'"),
    (lambda d: d.update(buckets={}), "'buckets'"),
    (lambda d: d["buckets"].update({"0": d["buckets"]["1"]}), "'buckets' has key '0'"),
    (lambda d: d["buckets"].update({"08": d["buckets"]["1"]}), "'buckets' has key '08'"),
    (lambda d: d["buckets"]["1"].pop("runner_up"), "buckets.1.runner_up"),
    (lambda d: d["buckets"]["1"]["best"].update(us=-1.0), "buckets.1.best.us"),
    (lambda d: d["buckets"]["1"]["best"].update(us=float("nan")), "buckets.1.best.us"),
    (lambda d: d["buckets"]["1"]["runner_up"].update(us=1.0), "buckets.1.runner_up.us"),
    (lambda d: d["buckets"]["1"]["best"]["config"].update(block_n=48), "buckets.1.best.config.block_n"),
    (lambda d: d["buckets"]["1"]["best"]["config"].update(block_m=24), "buckets.1.best.config.block_m"),
    (lambda d: d["buckets"]["1"]["best"]["config"].update(swap_ab=1), "buckets.1.best.config.swap_ab"),
    (lambda d: d["buckets"]["1"]["best"]["config"].update(decode="fast"), "buckets.1.best.config.decode"),
    (lambda d: d["buckets"]["1"]["best"]["config"].pop("num_warps"), "buckets.1.best.config.num_warps"),
    (lambda d: d["buckets"]["1"]["best"]["config"].update(block_k=256), "buckets.1.best.config.block_k"),
    (lambda d: d["buckets"]["1"]["best"]["config"].update(num_warps=2), "buckets.1.best.config"),   # not wgmma
    (lambda d: d["buckets"]["1"].update(tried=-1), "buckets.1.tried"),
])
def test_validate_names_the_bad_field(mutate, field):
    doc = _doc()
    cache.validate(copy.deepcopy(doc))
    mutate(doc)
    with pytest.raises(ValueError) as exc:
        cache.validate(doc)
    assert field in str(exc.value)


def test_validate_cpu_documents_allow_interpreter_configs():
    cpu_cfg = GemmConfig(16, 32, False, 1, 1)
    doc = _doc(device="cpu", buckets={"8": {"best": _entry(cpu_cfg, 3.0), "runner_up": None}})
    assert cache.validate(doc) is doc
    with pytest.raises(ValueError, match="buckets.8.best.config"):
        cache.validate(dict(doc, device=FAKE_GPU))


def test_load_names_the_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="x.json"):
        cache.load(path)
    path.write_text(json.dumps(dict(_doc(), schema=99)))
    with pytest.raises(ValueError, match="x.json.*'schema'"):
        cache.load(path)


def test_paths_and_names(tmp_path):
    assert cache.device_dir_name("NVIDIA H100 80GB HBM3") == "NVIDIA_H100_80GB_HBM3"
    assert cache.device_dir_name("NVIDIA GeForce RTX 5090 (D)") == "NVIDIA_GeForce_RTX_5090_D"
    p = cache.cache_path("gemm1", "NVIDIA H100 80GB HBM3", 256, 7168, 2048, 8, root=tmp_path)
    assert p == tmp_path / "NVIDIA_H100_80GB_HBM3" / "gemm1_E256_H7168_I2048_K8_w4a8.json"


def test_save_merges_buckets_of_the_same_versions(tmp_path):
    b1 = {"1": {"best": _entry(GPU_CFG, 10.0), "runner_up": None}}
    b8 = {"8": {"best": _entry(GemmConfig(16, 64, True), 20.0), "runner_up": None}}
    path = cache.save(_doc(buckets=b1), tmp_path)
    assert cache.save(_doc(buckets=b8), tmp_path) == path
    assert list(cache.load(path)["buckets"]) == ["1", "8"]
    assert list(json.loads(path.read_text()))[-1] == "buckets"
    _write_raw(tmp_path, dict(_doc(buckets=b1), triton="0.0.1"))      # other Triton: replaced, not merged
    cache.save(_doc(buckets=b8), tmp_path)
    assert list(cache.load(path)["buckets"]) == ["8"]
    cache.save(_doc(buckets=b1), tmp_path, merge=False)
    assert list(cache.load(path)["buckets"]) == ["1"]


# ----------------------------------------------------------------------------- lookup
def test_nearest_bucket_log2_ties_to_smaller():
    buckets = [1, 8, 32, 128]
    expect = {0: 1, 1: 1, 2: 1, 3: 8, 4: 8, 8: 8, 16: 8, 17: 32, 64: 32, 65: 128, 100000: 128}
    for t, b in expect.items():
        assert cache.nearest_bucket(buckets, t) == b, t
    assert cache.nearest_bucket({"2": 0, "8": 0}, 4) == 2           # exact tie (geometric mean) -> smaller
    assert cache.nearest_bucket(["4", "9"], 6) == 4                  # 6*6 == 4*9, exact arithmetic


def test_lookup_picks_nearest_bucket_and_caches_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    small, large = GemmConfig(16, 64, True, 4, 3), GemmConfig(128, 128, False, 8, 3)
    path = cache.save(_doc(buckets={"1": {"best": _entry(small, 5.0), "runner_up": None},
                                    "128": {"best": _entry(large, 50.0), "runner_up": None}}))
    assert path.parent.parent == tmp_path
    look = lambda t: cache.lookup("gemm1", FAKE_GPU, 4, 64, 32, 2, t)  # noqa: E731
    assert look(1) == small and look(11) == small and look(12) == large and look(4096) == large
    path.write_text("garbage")                                        # parsed once per process
    assert look(1) == small
    cache.clear_memory_cache()
    with pytest.warns(cache.AutotuneCacheWarning, match="invalid"):
        assert look(1) is None
    assert cache.lookup("gemm1", None, 4, 64, 32, 2, 1) is None       # no GPU -> no lookup
    with pytest.raises(ValueError, match="kernel"):
        cache.lookup("quant", FAKE_GPU, 4, 64, 32, 2, 1)


def _count_warnings(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        result = fn()
    return result, [w for w in rec if issubclass(w.category, cache.AutotuneCacheWarning)]


def test_version_mismatch_and_missing_file_fall_back_with_one_warning(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    _write_raw(tmp_path, dict(_doc(), triton="0.0.1"))
    look = lambda: cache.lookup("gemm1", FAKE_GPU, 4, 64, 32, 2, 1)  # noqa: E731
    result, warned = _count_warnings(look)
    assert result is None and len(warned) == 1
    assert "Triton 0.0.1" in str(warned[0].message) and "gemm1_E4_H64_I32_K2_w4a8.json" in str(warned[0].message)
    for _ in range(3):
        result, warned = _count_warnings(look)
        assert result is None and not warned                          # once per file
    cfg, warned = _count_warnings(lambda: configs.select_config(
        "gemm1", 2, 4, False, num_experts=4, hidden=64, intermediate=32, topk=2, device_name=FAKE_GPU))
    assert cfg == configs.heuristic_config("gemm1", 2, 4, False) and not warned
    # a missing file (gemm2 was never written) warns once too
    miss = lambda: configs.select_config("gemm2", 2, 4, False, num_experts=4, hidden=64, intermediate=32,  # noqa: E731
                                         topk=2, device_name=FAKE_GPU)
    cfg, warned = _count_warnings(miss)
    assert cfg == configs.heuristic_config("gemm2", 2, 4, False)
    assert len(warned) == 1 and "no file" in str(warned[0].message) and "tmoe-autotune" in str(warned[0].message)
    assert not _count_warnings(miss)[1]


def test_env_override_and_default_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.ENV_VAR, raising=False)
    default = Path(tmoe.__file__).resolve().parent.parent / "autotune_cache"
    assert cache.REPO_CACHE_DIR == default
    if default.is_dir():
        assert cache.cache_dir() == default
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "elsewhere"))
    assert cache.cache_dir() == tmp_path / "elsewhere"
    cache.save(_doc(), tmp_path / "elsewhere")
    assert cache.lookup("gemm1", FAKE_GPU, 4, 64, 32, 2, 1) == GPU_CFG
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "empty"))        # another dir: another memo entry
    result, warned = _count_warnings(lambda: cache.lookup("gemm1", FAKE_GPU, 4, 64, 32, 2, 1))
    assert result is None and len(warned) == 1


def test_select_config_uses_cache_else_heuristic(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    tuned1 = GemmConfig(32, 64, True, 4, 2, "asm")
    tuned8 = GemmConfig(64, 256, True, 8, 3, "arith")
    cache.save(_doc(buckets={"1": {"best": _entry(tuned1, 5.0), "runner_up": None},
                             "8": {"best": _entry(tuned8, 9.0), "runner_up": _entry(GPU_CFG, 9.5)}}))
    sel = lambda slots, soft=False, dev=FAKE_GPU, k=2: configs.select_config(  # noqa: E731
        "gemm1", slots, 4, soft, num_experts=4, hidden=64, intermediate=32, topk=k, device_name=dev)
    assert sel(2) == tuned1                        # 2 slots / topk 2 = 1 token -> bucket 1
    assert sel(16) == tuned8 and sel(6) == tuned8 and sel(4) == tuned1    # 8, 3 (8/3 < 3/1) and 2 tokens
    assert sel(16, soft=True) == configs.heuristic_config("gemm1", 16, 4, True)    # interpreter: never cached
    assert sel(16, dev=None) == configs.heuristic_config("gemm1", 16, 4, False)    # no device name
    for cfg in (sel(2), sel(16)):
        configs.check_gpu_config(cfg)


def test_fuse_gate_up_is_an_optional_config_field():
    base = {"block_m": 16, "block_n": 64, "swap_ab": True, "num_warps": 4, "num_stages": 3, "decode": "asm"}
    assert cache.config_from_dict(base).fuse_gate_up is False
    assert cache.config_from_dict({**base, "fuse_gate_up": True}).fuse_gate_up is True
    with pytest.raises(ValueError, match="fuse_gate_up"):
        cache.config_from_dict({**base, "fuse_gate_up": "yes"})


def test_maxnreg_is_an_optional_config_field():
    base = {"block_m": 16, "block_n": 64, "swap_ab": True, "num_warps": 4, "num_stages": 3, "decode": "asm"}
    assert cache.config_from_dict(base).maxnreg is None
    assert cache.config_from_dict({**base, "maxnreg": 128}).launch_options == {"maxnreg": 128}
    for bad in ("128", True, 3.5):
        with pytest.raises(ValueError, match="maxnreg"):
            cache.config_from_dict({**base, "maxnreg": bad})
    with pytest.raises(ValueError, match="maxnreg"):
        cache.config_from_dict({**base, "maxnreg": 8})


def test_sub_block_m_and_n_fastest_are_optional_config_fields():
    """They (and group_m, early, three_quarter, tma_b) round-trip through the cache's JSON form; absent = None (no sub
    body, the grid order by tile size; early, three_quarter, tma_b: False)."""
    base = {"block_m": 64, "block_n": 64, "swap_ab": True, "num_warps": 8, "num_stages": 3, "decode": "asm",
            "kernel": "gluon"}
    assert (cache.config_from_dict(base).sub_block_m, cache.config_from_dict(base).n_fastest) == (None, None)
    cfg = cache.config_from_dict({**base, "sub_block_m": 32, "n_fastest": True})
    assert (cfg.sub_block_m, cfg.n_fastest) == (32, True)
    assert cache.config_from_dict(cache.config_to_dict(cfg)) == cfg
    assert cache.config_from_dict({**base, "n_fastest": False}).n_fastest is False
    assert cache.config_from_dict(base).group_m is None
    grouped = cache.config_from_dict({**base, "n_fastest": True, "group_m": 4})
    assert grouped.group_m == 4 and cache.config_from_dict(cache.config_to_dict(grouped)) == grouped
    assert cache.config_from_dict(base).early is False
    early = cache.config_from_dict({**base, "n_fastest": True, "early": True})
    assert early.early and cache.config_from_dict(cache.config_to_dict(early)) == early
    assert cache.config_from_dict(base).three_quarter is False
    tq = cache.config_from_dict({**base, "block_m": 128, "three_quarter": True})
    assert tq.three_quarter and cache.config_from_dict(cache.config_to_dict(tq)) == tq
    assert cache.config_from_dict(base).tma_b is False
    tma = cache.config_from_dict({**base, "tma_b": True})
    assert tma.tma_b and cache.config_from_dict(cache.config_to_dict(tma)) == tma
    for name, bad in (("n_fastest", 1), ("n_fastest", "yes"), ("sub_block_m", True), ("sub_block_m", 24),
                      ("group_m", True), ("group_m", 3), ("group_m", "2"), ("early", 1), ("early", None),
                      ("three_quarter", 1), ("three_quarter", None), ("tma_b", 1), ("tma_b", None)):
        with pytest.raises(ValueError, match=name):
            cache.config_from_dict({**base, name: bad})


def test_seed_current_picks_takes_a_three_quarter_pick(monkeypatch):
    """A cached pick with the three-quarter body (the H200 prefill picks) is seeded second, with its variants: the
    body off, the other K loops without it (they cannot run it); no ValueError (the GPU run of the CLI hit one)."""
    from dataclasses import replace
    pick = GemmConfig(256, 64, True, 8, 2, kernel="gluon", sub_block_m=32, three_quarter=True)
    monkeypatch.setattr(cache, "lookup", lambda *a, **k: pick)
    heuristic = GemmConfig(256, 64, True, 8, 2, kernel="gluon", tail_block_m=64)
    spaces = {("gemm1", 8192): [heuristic]}
    cli.seed_current_picks(spaces, "Some GPU", 256, 7168, 2048, 8)
    cands = spaces[("gemm1", 8192)]
    assert cands[:2] == [heuristic, pick] and replace(pick, three_quarter=False) in cands
    assert replace(pick, prefetch=2, three_quarter=False) in cands
    assert all(c.k_loop == 0 for c in cands if c.three_quarter)
