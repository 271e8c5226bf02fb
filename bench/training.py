"""Training throughput: the Celery job path against a bare PyTorch loop.

Both train the same model on the same CIFAR-shaped data (32x32x3, 10 classes) with
the same batch size and optimiser; runs are interleaved and the best of each kept.
The job path is the real one: TrainingJob -> Celery task (in-process here) ->
services.run_job -> training loop with its progress and cancel checks against the
database. Where CUDA is visible it also times PreAct ResNet-18.

    .venv/bin/python bench/training.py [--images 4000] [--epochs 2] [--repeats 2]
"""

import argparse
import time

import numpy as np
import torch
from _django import setup


def synthetic_cifar(path: str, n: int) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8).repeat(4, 1).repeat(4, 2)
    classes = np.array(
        ["Airplane", "Automobile", "Bird", "Cat", "Deer", "Dog", "Frog", "Horse", "Ship", "Truck"]
    )
    np.savez(path, images=images, class_name=classes[rng.integers(0, 10, n)], ids=np.arange(n))


def bare_loop(
    architecture: str,
    images: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    device: str,
) -> float:
    """The plainest loop for the same work: images per second."""
    import torch.nn.functional as F

    from training.loop import channel_stats
    from training.nets import build_model

    torch.manual_seed(0)
    dev = torch.device(device)
    mean, std = channel_stats(images)
    model = build_model(architecture, 3, 10, mean, std).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).to(dev)
    y_all = torch.from_numpy(labels).to(dev)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True
    )
    steps = (len(x_all) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.05, total_steps=epochs * steps)
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(len(x_all), device=dev)
        for step in range(steps):
            index = order[step * batch_size : (step + 1) * batch_size]
            x = x_all[index].float().div_(255.0)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y_all[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return epochs * len(x_all) / (time.perf_counter() - start)


def job_path(
    dataset, architecture: str, epochs: int, batch_size: int, device: str, run: int
) -> tuple[float, float]:
    """(training images/s inside the job, whole job wall seconds)."""
    from training.services import create_job

    start = time.perf_counter()
    job = create_job(
        name=f"bench-{architecture}-{run}",
        dataset=dataset,
        policy="onehot",
        architecture=architecture,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=0.05,
        seeds=[0],
        heldout_fraction=0.2,
        device=device,
    )
    wall = time.perf_counter() - start
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log)
    return job.results.get().train_images_per_second, wall


def compare(dataset, architecture, epochs, batch_size, device, repeats) -> None:
    from datasets.selectors import dataset_arrays
    from training.selectors import heldout_split

    arrays = dataset_arrays(dataset)
    train_rows, _ = heldout_split(len(arrays.ids), 0.2, 0)
    images, labels = arrays.images[train_rows], arrays.labels[train_rows]
    bare, inside, walls = [], [], []
    for run in range(repeats):
        bare.append(bare_loop(architecture, images, labels, epochs, batch_size, device))
        rate, wall = job_path(dataset, architecture, epochs, batch_size, device, run)
        inside.append(rate)
        walls.append(wall)
    best_bare, best_job = max(bare), max(inside)
    print(
        f"{architecture} on {device}, {len(images)} images x {epochs} epochs, "
        f"batch {batch_size} (best of {repeats}):"
    )
    print(f"  bare PyTorch loop:      {best_bare:9.0f} images/s")
    print(
        f"  Celery job path:        {best_job:9.0f} images/s "
        f"(whole job incl. data, evaluation, checkpoint: {min(walls):.1f} s)"
    )
    print(f"  ratio job / bare:       {best_job / best_bare:9.3f}  (goal >= 0.95)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = setup()
    from datasets.services import import_dataset

    synthetic_cifar(str(work / "cifar-shaped.npz"), args.images)
    dataset = import_dataset(
        name="bench-cifar", kind="npz", path=work / "cifar-shaped.npz", any_path=True
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    compare(dataset, "small_cnn", args.epochs, args.batch_size, "cpu", args.repeats)
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")
        compare(dataset, "small_cnn", args.epochs, args.batch_size, "cuda", args.repeats)
        compare(dataset, "preact_resnet18", max(args.epochs, 2), 256, "cuda", args.repeats)
    else:
        print("no GPU visible: the PreAct ResNet-18 GPU figures are skipped")


if __name__ == "__main__":
    main()
