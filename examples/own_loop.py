"""Train a timm model with Accelerate: an ordinary training script, written the usual way.

    python examples/own_loop_plain.py --epochs 14                        # the plain script
    python examples/own_loop.py --epochs 14 --teacher runs/teacher       # the same, with trickbox's tricks
    accelerate launch --num_processes 2 examples/own_loop.py --data cifar10-jpeg.zip --limit 5000

The data is scikit-learn's digits, or a zip of JPEGs laid out as train/CLASS/*.jpg and
test/CLASS/*.jpg. own_loop_plain.py and own_loop.py are the same script except for about
ten lines that add trickbox's mixup, label smoothing, SGDR and distillation: diff the two
files to see what trickbox asks of a training loop.
"""
import argparse
import io
import os
import zipfile

import numpy as np
import timm
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

import trickbox.models  # noqa: F401  registers CIFAR-sized ResNets (cifar_resnet8, ...) in timm; nothing else
import trickbox.sweep


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a timm model with Accelerate.")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--model", default="cifar_resnet8", help="any timm model name")
    p.add_argument("--data", default="digits",
                   help="'digits', or the path of a zip with train/ and test/ class folders")
    p.add_argument("--limit", type=int, default=None, help="use at most this many images of each split")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="a trickbox run directory to distil from (trickbox train writes one)")
    p.add_argument("--tracker", choices=("wandb", "none"),
                   default="wandb" if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") else "none")
    return p.parse_args()


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    y = torch.tensor(digits.target, dtype=torch.long)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return x_train, y_train, x_test, y_test


def load_zip_tensors(path: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from PIL import Image

    with zipfile.ZipFile(path) as z:
        names = sorted(n for n in z.namelist() if n.lower().endswith((".jpg", ".jpeg", ".png")))
        classes = sorted({n.split("/")[1] for n in names})

        def split(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
            files = [n for n in names if n.startswith(prefix + "/")]
            if limit is not None:
                files = files[:: max(1, len(files) // limit)][:limit]  # every k-th file: all classes stay in
            images = [np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")) for n in files]
            x = torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
            return x, torch.tensor([classes.index(n.split("/")[1]) for n in files])

        return (*split("train"), *split("test"))


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator) -> float:
    """Top-1 accuracy over every process's share of ``loader``."""
    model.eval()
    correct = seen = 0
    for x, y in loader:
        predictions, y = accelerator.gather_for_metrics((model(x).argmax(dim=1), y))
        correct += int((predictions == y).sum())
        seen += len(y)
    model.train()
    return correct / seen


def main() -> None:
    args = parse_args()
    t = trickbox.sweep.current_trial()  # a no-op stand-in outside `trickbox sweep --script`
    accelerator = Accelerator(log_with=None if args.tracker == "none" else args.tracker)
    set_seed(args.seed)
    x_train, y_train, x_test, y_test = (load_digits_tensors() if args.data == "digits"
                                        else load_zip_tensors(args.data, args.limit))
    x_train, x_val, y_train, y_val = train_test_split(x_train, y_train, test_size=0.1, stratify=y_train, random_state=0)
    mean, std = x_train.mean(dim=(0, 2, 3), keepdim=True), x_train.std(dim=(0, 2, 3), keepdim=True)
    x_train, x_val, x_test = (x_train - mean) / std, (x_val - mean) / std, (x_test - mean) / std
    num_classes = int(y_train.max()) + 1
    train_loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch_size, shuffle=True, drop_last=True)
    val_loader = DataLoader(TensorDataset(x_val, y_val), batch_size=256)
    test_loader = DataLoader(TensorDataset(x_test, y_test), batch_size=256)

    model = timm.create_model(args.model, num_classes=num_classes, in_chans=x_train.shape[1])
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(model, optimizer, train_loader,
                                                                                  val_loader, test_loader)
    tricks = trickbox.load_tricks(t.suggest({"mixup": {"alpha": 0.2}, "label_smoothing": {"eps": 0.1}, "sgdr": {"t0": 2, "t_mult": 2}, **({"distillation": {"teacher": args.teacher, "temperature": 4.0}} if args.teacher else {})}))  # noqa: E501
    tricks.setup(model, optimizer, accelerator=accelerator, num_classes=num_classes, epochs=args.epochs, steps_per_epoch=len(train_loader), seed=args.seed)  # noqa: E501
    accelerator.init_trackers("own-loop", config=vars(args))

    model.train()
    for epoch in range(args.epochs):
        total_loss = 0.0
        for x, y in train_loader:
            batch = tricks.batch(x, y)
            loss = tricks.loss(tricks.forward(model, batch), batch).total
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            tricks.step()
            total_loss += loss.item()
        train_loss, val_accuracy = total_loss / len(train_loader), evaluate(model, val_loader, accelerator)
        accelerator.log({"train/loss": train_loss, "val/accuracy": val_accuracy}, step=(epoch + 1) * len(train_loader))
        if t.report(val_accuracy, epoch + 1):  # under `trickbox sweep --script`: True when Optuna prunes this trial
            break
        accelerator.print(f"epoch {epoch + 1}/{args.epochs}: train loss {train_loss:.4f}, val accuracy "
                          f"{val_accuracy:.4f}")

    t.finish(val_accuracy)
    test_accuracy = evaluate(model, test_loader, accelerator)
    accelerator.log({"test/accuracy": test_accuracy}, step=args.epochs * len(train_loader))
    accelerator.print(f"test accuracy {test_accuracy:.4f}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
