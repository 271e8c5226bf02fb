"""Training throughput: the Celery job path against a bare PyTorch loop.

Both train the same model on the same CIFAR-shaped data (32x32x3, 10 classes) with
the same batch size, optimiser and recipe; runs are interleaved and the best of each
kept. The job path is the real one: TrainingJob -> Celery task (in-process here) ->
services.run_job -> training loop with its progress and cancel checks against the
database.

On CPU: the small CNN, plain (no augmentation, no mixing), as before. Where CUDA is
visible, also: PreAct ResNet-18 with the standard recipe (random crop and flip) and
online mixup (alpha 1, mixup labels), job path against a bare loop of the same recipe;
and the wall time of one whole relabel -> retrain -> evaluate job (a relabel policy
from scripted Construct judgments on a grid stimulus set, PreAct ResNet-18, evaluation
with FGSM and PGD) on --whole-images CIFAR-shaped images for --whole-epochs epochs.
Without a GPU those are skipped (--whole-job-on-cpu runs the whole job on CPU, to try
the path at small sizes).

    .venv/bin/python bench/training.py [--images 4000] [--epochs 2] [--repeats 2]
        [--whole-images 50000] [--whole-epochs 10] [--whole-job-on-cpu]
        [--whole-architecture preact_resnet18]
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
    recipe: bool = False,
) -> float:
    """The plainest loop for the same work: images per second. `recipe`: random crop
    and flip, then mixup of the batch with a shuffled copy at lam ~ Beta(1, 1) and
    mixup labels, as the job path does with augment and online_alpha 1."""
    import torch.nn.functional as F

    from training.loop import channel_stats, random_crop_flip
    from training.nets import build_model

    rng = np.random.default_rng(0)

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
            batch = random_crop_flip(x_all[index]) if recipe else x_all[index]
            x = batch.float().div_(255.0)
            if dev.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = F.one_hot(y_all[index], 10).float()
            if recipe:
                lam = float(rng.beta(1.0, 1.0))
                perm = torch.randperm(len(index), device=dev)
                x = lam * x + (1 - lam) * x[perm]
                y = lam * y + (1 - lam) * y[perm]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = model(x)
            loss = -(y * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return epochs * len(x_all) / (time.perf_counter() - start)


def job_path(
    dataset,
    architecture: str,
    epochs: int,
    batch_size: int,
    device: str,
    run: int,
    recipe: bool = False,
) -> tuple[float, float]:
    """(training images/s inside the job, whole job wall seconds)."""
    from training.services import create_job

    mixing = {"policy": "mixup", "online_alpha": 1.0, "augment": True} if recipe else {}
    start = time.perf_counter()
    job = create_job(
        name=f"bench-{architecture}-{run}-{device}-{recipe}",
        dataset=dataset,
        **{"policy": "onehot", **mixing},
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


def compare(dataset, architecture, epochs, batch_size, device, repeats, recipe=False) -> None:
    from datasets.selectors import dataset_arrays
    from training.selectors import heldout_split

    arrays = dataset_arrays(dataset)
    train_rows, _ = heldout_split(len(arrays.ids), 0.2, 0)
    images, labels = arrays.images[train_rows], arrays.labels[train_rows]
    bare, inside, walls = [], [], []
    for run in range(repeats):
        bare.append(bare_loop(architecture, images, labels, epochs, batch_size, device, recipe))
        rate, wall = job_path(dataset, architecture, epochs, batch_size, device, run, recipe)
        inside.append(rate)
        walls.append(wall)
    best_bare, best_job = max(bare), max(inside)
    what = "crop+flip, online mixup" if recipe else "plain"
    print(
        f"{architecture} on {device} ({what}), {len(images)} images x {epochs} epochs, "
        f"batch {batch_size} (best of {repeats}):"
    )
    print(f"  bare PyTorch loop:      {best_bare:9.0f} images/s")
    print(
        f"  Celery job path:        {best_job:9.0f} images/s "
        f"(whole job incl. data, evaluation, checkpoint: {min(walls):.1f} s)"
    )
    print(f"  ratio job / bare:       {best_job / best_bare:9.3f}  (goal >= 0.95)")


def observed_grid(dataset, n_pairs: int, observers: int):
    """A grid stimulus set of the dataset and a Construct study on it whose scripted
    observers put every pair's 50/50 point at lam 0.6 (through the participant
    services, as real answers arrive)."""
    import uuid

    from datasets.services import create_stimulus_set
    from elicitation.models import Study
    from elicitation.services import (
        RecruiterIds,
        build_conditions,
        finish_instructions,
        record_judgment,
        start_session,
    )

    grid = create_stimulus_set(
        name="bench-grid", dataset=dataset, kind="grid", n_pairs=n_pairs, seed=1
    )
    study = Study.objects.create(
        slug="bench-relabel", title="Bench", interface="construct", stimulus_set=grid,
        status="live", consent_text="-", consent_items=["yes"], instruction_pages=["-"],
        quiz=[], feedback_questions=[], repeat_trials=0, condition_count=1,
        ask_confidence=True, completion_code="BENCH",
    )  # fmt: skip
    build_conditions(study)
    for i in range(observers):
        session = start_session(study, RecruiterIds(f"observer-{i}"))
        finish_instructions(session)
        while True:
            session.refresh_from_db()
            if session.position >= session.trial_count:
                break
            start = round(10 * session.trial_order[session.position]["start_lam"])
            step = 1 if start < 6 else -1
            steps = [start + step * k for k in range(abs(6 - start) + 1)]
            record_judgment(
                session.token,
                {
                    "session": session.reference,
                    "trial_index": session.position,
                    "idempotency_key": str(uuid.uuid4()),
                    "rt_ms": 1500.0,
                    "confidence": 80,
                    "response": {"start_step": start, "final_step": steps[-1], "steps": steps},
                },
            )
    return grid, study


def whole_job(
    work, images: int, epochs: int, device: str, architecture: str = "preact_resnet18"
) -> None:
    """Wall time of one relabel -> retrain -> evaluate job (data and judgments
    prepared beforehand, not timed)."""
    from datasets.services import import_dataset
    from training.services import create_job

    synthetic_cifar(str(work / "whole.npz"), images)
    dataset = import_dataset(name="bench-whole", kind="npz", path=work / "whole.npz", any_path=True)
    grid, study = observed_grid(dataset, n_pairs=100, observers=3)
    start = time.perf_counter()
    job = create_job(
        name="bench-whole",
        dataset=dataset,
        policy="relabel",
        stimulus_sets=[grid],
        studies=[study],
        architecture=architecture,
        epochs=epochs,
        batch_size=256,
        learning_rate=0.1,
        augment=True,
        seeds=[0],
        heldout_fraction=0.2,
        device=device,
    )
    wall = time.perf_counter() - start
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log)
    result = job.results.get()
    split = next(line for line in job.log.splitlines() if "mixed points" in line)
    print(
        f"whole relabel -> retrain -> evaluate job, {architecture} on {device}, "
        f"{images} CIFAR-shaped images ({split.split(': ', 1)[-1]}; "
        f"{result.metrics['n_eval']} evaluated with FGSM and PGD), {epochs} epochs: "
        f"{wall:.1f} s wall ({result.train_images_per_second:.0f} training images/s; "
        "goal < 60 s on one H100/H200-class GPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--whole-images", type=int, default=50_000)
    parser.add_argument("--whole-epochs", type=int, default=10)
    parser.add_argument("--whole-job-on-cpu", action="store_true")
    parser.add_argument("--whole-architecture", default="preact_resnet18")
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
        compare(dataset, "preact_resnet18", max(args.epochs, 2), 256, "cuda", args.repeats, True)
        whole_job(work, args.whole_images, args.whole_epochs, "cuda", args.whole_architecture)
    else:
        print(
            "no GPU visible: the PreAct ResNet-18 GPU figures (job path against a bare loop "
            "of the same recipe, and the whole relabel -> retrain -> evaluate job) are skipped"
        )
        if args.whole_job_on_cpu:
            whole_job(work, args.whole_images, args.whole_epochs, "cpu", args.whole_architecture)


if __name__ == "__main__":
    main()
