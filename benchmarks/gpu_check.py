"""GPU check: fine-tuning img/s and peak memory of a TorchTrainer job against a plain timm/PyTorch loop.

Both run the same model on the same shards (synthetic COVIDx-like images), bf16 autocast and channels_last
on GPU, SGD, for a fixed number of steps, one after the other in this run; the ratio is job / plain.
Then, on a GPU only, activation checkpointing: peak memory and img/s of plain training steps with and without
timm's set_grad_checkpointing for each of --checkpoint-models at 480 px (R50x1 and R152x4 by default), at the
largest micro-batch that fits without checkpointing (found by the preflight of scaling/train/memory.py).

    python benchmarks/gpu_check.py                         # BiT R50x1 at 224 and 480 px (needs a GPU)
    python benchmarks/gpu_check.py --ladder cpu --model w8 --resolutions 32 --steps 3 --batch 8 --images 32
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def plain_loop(model_args: tuple, shards, train, batch: int, steps: int, device) -> tuple[float, float]:
    """The baseline: timm model, a DataLoader over the same shards, the same crop and precision."""
    import torch

    from scaling import models
    from scaling.data.shards import ShardDataset
    from scaling.train.augment import CROP_FRACTION

    ladder, name = model_args
    model = models.create_model(ladder, name, num_classes=1).to(device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
        torch.cuda.reset_peak_memory_stats(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loader = torch.utils.data.DataLoader(ShardDataset(shards, train), batch_size=batch, shuffle=True, drop_last=True)
    side = shards.preprocess.resolution
    crop = round(side * CROP_FRACTION)
    done, started = 0, None
    while done < steps:
        for images, labels in loader:
            if started is None:
                started = time.perf_counter()
            images = models.to_rgb(images[..., :crop, :crop].to(device, non_blocking=True)).sub(0.5).div(0.5)
            if on_gpu:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_gpu):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images).float().squeeze(1),
                                                                            labels.to(device).float())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    if on_gpu:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if on_gpu else float("nan")
    return steps * batch / seconds, peak


def checkpointing_rows(ladder: str, names: list[str], crop: int, steps: int) -> list[tuple]:
    """(model, micro-batch, checkpointing, img/s, peak GiB) of bf16 forward+backward passes on blank images."""
    import torch

    from scaling import models
    from scaling.train import memory
    from scaling.train.loop import loss

    device = torch.device("cuda")
    rows = []
    for name in names:
        model = models.create_model(ladder, name, num_classes=1).to(device, memory_format=torch.channels_last)
        peak = memory.gpu_peak(model, "binary", 1, crop, device, True, loss)
        micro, _ = memory.choose_micro_batch(128, peak, memory.gpu_budget(device))
        for checkpointing in (False, True):
            model.set_grad_checkpointing(checkpointing)
            peak(micro)  # warm-up (cuDNN autotuning)
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            peaks = [peak(micro) for _ in range(steps)]
            seconds = time.perf_counter() - started
            rows.append((name, micro, checkpointing, steps * micro / seconds, max(peaks) / 2**30))
        del model, peak
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ladder", default="bit")
    parser.add_argument("--model", default="R50x1")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[224, 480], help="crop sizes seen by the model")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--checkpoint-models", nargs="*", default=["R50x1", "R152x4"],
                        help="rungs of --ladder for the checkpointing comparison at 480 px (GPU only)")
    parser.add_argument("--checkpoint-steps", type=int, default=5)
    args = parser.parse_args()

    import ray
    import torch

    from scaling.config import Recipe, ResourcesConfig
    from scaling.data.registry import open_dataset
    from scaling.data.shards import Preprocess, prepare_shards
    from scaling.train.job import run_job
    from scaling.train.augment import CROP_FRACTION
    from scaling.train.spec import JobSpec

    gpu = torch.cuda.is_available()
    torch.set_num_threads(1)  # as many as the job's one worker gets (cpus_per_worker=1)
    device = torch.device("cuda" if gpu else "cpu")
    work = tempfile.mkdtemp(prefix="gpu-check-")
    ray.init(log_to_driver=False)
    rows = []
    for crop in args.resolutions:
        side = round(crop / CROP_FRACTION)
        dataset = open_dataset("synthetic-covidx", size=args.images, test_size=0, image_size=side)
        shards = prepare_shards(dataset, Preprocess(resolution=side), work, workers=os.cpu_count() or 1)
        rows_all = shards.records["index"].to_numpy()
        train, val = tuple(map(int, rows_all[:-args.batch])), tuple(map(int, rows_all[-args.batch:]))
        recipe = Recipe(steps=args.steps, batch_size=args.batch, lr=1e-3, eval_every=args.steps, augment=False)
        spec = JobSpec(kind="scratch", ladder=args.ladder, model=args.model, shards=str(shards.path), train=train,
                       val=val, test=(), recipe=recipe, seeds=(0,), bf16=True)
        resources = ResourcesConfig(num_workers=1, use_gpu=gpu, gpus_per_worker=1, cpus_per_worker=1)
        m = run_job(spec, name=f"job-{crop}", storage_path=work, resources=resources).metrics
        job_tp = args.steps * args.batch / m["train_seconds"]
        plain_tp, plain_peak = plain_loop((args.ladder, args.model), shards, train, args.batch, args.steps, device)
        rows.append((crop, job_tp, plain_tp, m.get("peak_memory_gb", float("nan")), plain_peak))
    ray.shutdown()
    name = torch.cuda.get_device_name(0) if gpu else "CPU"
    print(f"\n{args.ladder}/{args.model} fine-tuning, batch {args.batch}, {args.steps} steps, bf16={gpu}, on {name}")
    print(f"{'px':>5} {'job img/s':>10} {'plain img/s':>12} {'ratio':>6} {'job peak GB':>12} {'plain peak GB':>14}")
    for crop, job_tp, plain_tp, job_peak, plain_peak in rows:
        print(f"{crop:>5} {job_tp:>10.1f} {plain_tp:>12.1f} {job_tp / plain_tp:>6.2f} {job_peak:>12.2f} "
              f"{plain_peak:>14.2f}")
    if not gpu:
        print("activation checkpointing: skipped (no GPU)", file=sys.stderr)
        return
    rows = checkpointing_rows(args.ladder, args.checkpoint_models, 480, args.checkpoint_steps)
    print("\nactivation checkpointing at 480 px, bf16, micro-batch: the largest that fits without it")
    print(f"{'model':>8} {'micro':>6} {'ckpt':>5} {'img/s':>8} {'peak GB':>8} {'img/s ratio':>12} {'peak ratio':>11}")
    for plain, ckpt in zip(rows[::2], rows[1::2]):
        for row in (plain, ckpt):
            print(f"{row[0]:>8} {row[1]:>6} {'yes' if row[2] else 'no':>5} {row[3]:>8.1f} {row[4]:>8.2f} "
                  f"{row[3] / plain[3]:>12.2f} {row[4] / plain[4]:>11.2f}")


if __name__ == "__main__":
    main()
