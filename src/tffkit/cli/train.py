"""Train a universal detector (Wang et al.'s recipe: blur + JPEG augmentation, Adam 1e-4, batch 64,
early stopping on validation accuracy) or, with --color-robust, a colour-robust one (RandomGrayscale 0.5).
Writes OUT/model_best.pth, OUT/model_last.pth (Wang's {'model': state_dict} format), OUT/history.csv and
OUT/run.json; --resume continues a killed run exactly. Under torchrun the global batch is split across
processes."""

from __future__ import annotations

import argparse

from .common import (
    ARCH_HELP,
    MAX_PER_CLASS_HELP,
    data_spec,
    device_args,
    is_main_process,
    layout_args,
    progress_args,
    trust_code_arg,
)

FAILED = "the checkpoints written so far are kept (--resume continues from model_last.pth)"
HELP = "train a (colour-robust) detector: model_best.pth, model_last.pth, history.csv"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default="resnet50", help=ARCH_HELP)
    p.add_argument("--data", required=True, help="training root (e.g. {0_real,1_fake} folders at any depth; any layout "
                                                 "of --layout) or a CSV manifest")
    p.add_argument("--val", required=True, help="validation root (same layout)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--color-robust", action="store_true", help="RandomGrayscale(p=0.5) in training (CR detector)")
    p.add_argument("--init", default="none", metavar="PATH|none",
                   help="same-architecture weights to start from (e.g. torchvision ImageNet; head re-initialised)")
    p.add_argument("--blur-prob", type=float, default=0.5, help="probability of Gaussian blur, sigma ~ U[0,3]")
    p.add_argument("--jpeg-prob", type=float, default=0.5, help="probability of JPEG, quality ~ U{30..100}")
    p.add_argument("--batch-size", type=int, default=64, help="global batch size (split across processes)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--max-epochs", type=int, default=None, help="stop after N epochs (default: early stopping only)")
    p.add_argument("--max-steps", type=int, default=None, help="stop (and checkpoint) after N optimiser steps")
    p.add_argument("--save-every", type=int, default=None, metavar="STEPS",
                   help="also write model_last.pth every N steps (resumable mid-epoch)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, augmentations and data order")
    p.add_argument("--amp", default="off", choices=["off", "bf16"], help="bf16 autocast")
    p.add_argument("--resume", action="store_true", help="continue from OUT/model_last.pth")
    p.add_argument("--crop-size", type=int, default=224, help="RandomCrop (training) / CenterCrop (validation)")
    p.add_argument("--load-size", type=int, default=256, help="shorter side resized up to this size when smaller")
    p.add_argument("--max-per-class", type=int, default=None, metavar="N", help=MAX_PER_CLASS_HELP)
    device_args(p)
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading worker processes per process; default: this process's cores minus one")
    progress_args(p)
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="allow an --init file holding pickled Python objects (unpickling can run code)")
    trust_code_arg(p)
    layout_args(p)


def run(args: argparse.Namespace) -> int:
    from ..train import train_detector

    init = None if args.init in (None, "", "none") else args.init
    result = train_detector(
        args.arch, data_spec(args), data_spec(args, "val"), args.out, color_robust=args.color_robust, init=init,
        blur_prob=args.blur_prob, jpeg_prob=args.jpeg_prob, batch_size=args.batch_size, lr=args.lr,
        max_epochs=args.max_epochs, seed=args.seed, amp=args.amp, resume=args.resume, crop_size=args.crop_size,
        load_size=args.load_size, device=args.device, num_workers=args.workers, progress=not args.no_progress,
        max_per_class=args.max_per_class, max_steps=args.max_steps, save_every=args.save_every,
        trust_init=args.trust_checkpoint)
    if is_main_process():
        best = result["best"]
        summary = (f"best epoch {best['epoch']}: val_acc {best['val_acc']:.4f} val_ap {best['val_ap']:.4f}"
                   if best else "no completed epoch")
        print(f"stopped ({result['stopped']}) after {result['epochs']} epoch(s), {result['steps']} step(s); "
              f"{summary}; skipped {len(result['skipped'])} unreadable file(s); results in {args.out}")
    return 0
