"""Distributed helpers: environment detection, and a real 2-process gloo run of the collectives."""
import os
import subprocess
import sys
import textwrap

from videomamba.engine.dist import _first_slurm_host, all_gather_object, all_reduce_mean, detect, get_world_size


def test_detect_torchrun_slurm_single():
    assert detect({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (3, 8, 1, "torchrun")
    srun = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_STEP_NUM_TASKS": "16", "SLURM_LOCALID": "5",
            "SLURM_STEP_ID": "0"}
    assert detect(srun) == (5, 16, 5, "slurm")
    # the sbatch shell (no srun step): the job's task count must not make a plain `python` wait for peers
    assert detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "16"}) == (0, 1, 0, "single")
    assert detect({**srun, "SLURM_PROCID": "0", "SLURM_STEP_ID": "4294967294"}) == (0, 1, 0, "single")
    # srun -n 1 inside a 16-task job: a single process
    assert detect({**srun, "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}) == (0, 1, 0, "single")
    # torchrun under srun (one torchrun per node): torchrun's variables win
    assert detect({**srun, "RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1"}) == (9, 16, 1, "torchrun")
    assert detect({}) == (0, 1, 0, "single")
    assert _first_slurm_host("gpu[03-05,07],cpu1") == "gpu03"
    assert _first_slurm_host("node7") == "node7"


def test_single_process_collectives_are_identity():
    import torch

    t = torch.tensor([1.0, 3.0])
    assert get_world_size() == 1
    assert torch.equal(all_reduce_mean(t), t)
    assert all_gather_object({"a": 1}) == [{"a": 1}]


def _run_two_ranks(tmp_path, body: str, port: int) -> str:
    """Run ``body`` (a script) as 2 gloo ranks under torchrun; returns their stdout."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(body))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
                        str(script)], capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_two_process_gloo_collectives(tmp_path):
    out = _run_two_ranks(tmp_path, """
        import torch
        from videomamba.engine.dist import init_distributed, all_reduce_mean, all_gather_object, cleanup
        info = init_distributed(device="cpu")
        m = all_reduce_mean(torch.tensor([float(info.rank)]))
        g = all_gather_object(info.rank * 10)
        print(f"rank{info.rank} world{info.world_size} mean{m.item()} gather{g} source{info.source}", flush=True)
        cleanup()
    """, port=29611)
    for rank in (0, 1):
        assert f"rank{rank} world2 mean0.5 gather[0, 10] sourcetorchrun" in out


def test_shard_sampler_covers_every_sample_once():
    from videomamba.engine.samplers import ShardSampler

    for n, world in ((269, 2), (10, 3), (2, 4)):
        shards = [list(ShardSampler(n, r, world)) for r in range(world)]
        flat = sorted(i for s in shards for i in s)
        assert flat == list(range(n))
        assert [len(ShardSampler(n, r, world)) for r in range(world)] == [len(s) for s in shards]


def test_epoch_shuffle_sampler_is_a_function_of_seed_and_epoch():
    from videomamba.engine.samplers import EpochShuffleSampler

    def shards(epoch, n=10, world=3, seed=0):
        out = []
        for r in range(world):
            s = EpochShuffleSampler(n, r, world, seed)
            s.set_epoch(epoch)
            out.append(list(s))
        return out

    a, b = shards(1), shards(1)
    assert a == b and shards(2) != a                         # same epoch: same order; next epoch: another
    assert all(len(s) == 4 for s in a)                        # ceil(10 / 3), padded by wrapping
    assert set(i for s in a for i in s) == set(range(10))     # every sample is seen
    assert len(EpochShuffleSampler(10, 0, 3)) == 4


def test_repeat_aug_sampler_sends_copies_to_different_ranks():
    from videomamba.engine.samplers import RepeatAugSampler

    n, world = 600, 3
    samplers = [RepeatAugSampler(n, r, world, seed=0, num_repeats=3) for r in range(world)]
    for s in samplers:
        s.set_epoch(5)
    shards = [list(s) for s in samplers]
    # the epoch keeps one pass's length: floor(600 / 256) * 256 / 3 = 170 samples per rank
    assert [len(s) for s in shards] == [170, 170, 170] == [len(s) for s in samplers]
    # with 3 repeats and 3 ranks, each image's copies land on the three ranks at the same position
    assert shards[0] == shards[1] == shards[2]
    assert len(set(shards[0])) == 170                          # distinct images within one rank
    # a small set (< 256) is not cut to nothing
    assert len(RepeatAugSampler(100, 0, 2)) == 50


def test_all_gather_with_grad_two_ranks_equals_one_process(tmp_path):
    """A contrastive loss over features gathered from 2 gloo ranks: the same loss on every rank, and each
    rank's gradient (after DDP's mean over ranks) equals that of one process holding the whole batch."""
    out = _run_two_ranks(tmp_path, """
        import torch
        from videomamba.engine.dist import init_distributed, all_gather_with_grad, cleanup
        info = init_distributed(device="cpu")
        torch.manual_seed(0)
        a_all, b_all = torch.randn(6, 4), torch.randn(6, 4)
        def loss_of(a, b):
            sim = a @ b.t()
            return torch.nn.functional.cross_entropy(sim, torch.arange(sim.shape[0]))
        a = a_all[3 * info.rank:3 * info.rank + 3].clone().requires_grad_(True)
        b = b_all[3 * info.rank:3 * info.rank + 3].clone().requires_grad_(True)
        loss = loss_of(all_gather_with_grad(a), all_gather_with_grad(b))
        loss.backward()
        ref_a, ref_b = a_all.clone().requires_grad_(True), b_all.clone().requires_grad_(True)
        ref = loss_of(ref_a, ref_b)
        ref.backward()
        want = ref_a.grad[3 * info.rank:3 * info.rank + 3]
        # each rank computes the whole loss, so its slice's gradient is world x the one-process gradient;
        # DDP's mean over ranks of a parameter feeding the slices then gives exactly the one-process gradient
        ok = torch.allclose(loss, ref) and torch.allclose(a.grad, 2 * want, atol=1e-6)
        ok = ok and torch.allclose(b.grad, 2 * ref_b.grad[3 * info.rank:3 * info.rank + 3], atol=1e-6)
        print(f"rank{info.rank} ok{bool(ok)}", flush=True)
        cleanup()
    """, port=29612)
    assert "rank0 okTrue" in out and "rank1 okTrue" in out


def test_all_gather_with_grad_single_process_is_identity():
    import torch

    from videomamba.engine.dist import all_gather_with_grad

    t = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(t) is t
