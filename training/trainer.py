"""The training loop shared by every training task.

Iteration based: ``train_iter`` steps of the optimiser of ``model.optimizer`` (Adam by default;
learning rate ``model.learning_rate``, scheduled per step by ``model.scheduler``, see
``training.optimization``) over an infinite, resumable batch order. Writes
``<EXPER_PATH>/<name>/config.yml``, checkpoints in ``<EXPER_PATH>/<name>/checkpoints/`` (every
``save_interval`` steps, at the end, and on Ctrl-C / SIGTERM) and TensorBoard events in
``<RUNS_PATH>/<name>/``. A run resumes from its latest checkpoint; every random draw of step
``i`` is seeded by (seed, i), so a resumed run continues the same loss curve.

A task object supplies the data and the loss (see :class:`TrainTask`).

Several processes (``torchrun``, see ``training.distributed``): the model is wrapped in
DistributedDataParallel (batch norm converted to SyncBatchNorm on several GPUs), each process
trains on its shard of every global batch (``ResumableBatchSampler``), and the per-sample random
draws of a step are those of the sample's position in the global batch (``Randomness.rows``), so
N processes with batch B follow the same run as one process with batch N*B. Rank 0 alone writes
checkpoints, the config and TensorBoard, and validates; all processes resume from the checkpoint
rank 0 reads (sent to the others), agree on stopping (Ctrl-C / SIGTERM, non-finite loss) before
each update, and wait for rank 0 after every save.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

import settings
from datasets.augmentation import Randomness
from datasets.collate import collate
from models import (
    build_model,
    extract_state_dict,
    frozen_modules,
    load_state,
    load_weights,
    model_config_for,
    read_weights,
    train_mode,
)
from training.checkpoints import (
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    resolve_pretrained,
    save_checkpoint,
)
from training.optimization import (
    build_optimizer,
    build_scheduler,
    check_optimization_config,
    restart_schedule,
)
from training.sampler import ResumableBatchSampler
from training.tensorboard import EventLog
from utils.cli import UserError, autocast_dtype, resolve_device
from utils.config import ConfigError, dump_config
from utils.io import folder_lock, remove_stale_temp_files


class TrainTask(Protocol):
    """What a training task provides to :class:`Trainer`."""

    def datasets(self) -> tuple:  # (train dataset, val dataset or None)
        ...

    def prepare(self, batch: dict, training: bool, rng: Randomness, device: torch.device) -> dict:
        ...

    def loss(self, model: torch.nn.Module, prepared: dict) -> tuple[torch.Tensor, dict]:
        ...

    def validate(self, model: torch.nn.Module, batches, device: torch.device) -> dict:
        ...

    # optional attribute: unused_parameters (bool, default True) -- some parameters get no
    # gradient from the loss (DistributedDataParallel must then look for them every step)

    def show(self, model: torch.nn.Module, prepared: dict) -> dict:  # name -> H x W x 3 uint8
        ...


class NonFiniteLoss(UserError):
    """The loss or the weights became NaN or infinite; the run stops, its last good checkpoint stays.

    A checkpoint is good when its weights are finite and the loss computed with them (the next
    step's) is finite: a checkpoint whose weights gave a non-finite loss is renamed
    ``*.pth.tar.nonfinite`` (kept for inspection, never resumed from)."""


NONFINITE_SUFFIX = ".nonfinite"


def step_seed(seed: int, n_iter: int, rank: int = 0) -> int:
    """The seed of every random draw made at step ``n_iter`` (the trainer uses ``rank=0`` on every
    process: per-sample draws are told apart by the sample's row in the global batch)."""
    return ((seed * 1_000_003 + n_iter) * 64 + rank) % (2 ** 63)


def _worker_out_of_the_stop_signals(_worker_id: int) -> None:
    """DataLoader worker start: leave the process group of the main process.

    Ctrl-C and SIGTERM are handled by the main process, which saves a checkpoint before leaving.
    `timeout`, SLURM and Kubernetes send SIGTERM to the whole process group: a worker that died of
    it would take the main process down before the checkpoint. In a group of its own the worker no
    longer gets these signals, yet stays stoppable by the main process (DataLoader shuts its
    workers down by message, then by SIGTERM to each pid); it also ends by itself when the main
    process is gone (DataLoader's watchdog)."""
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StopFlag:
    """First SIGINT/SIGTERM asks the loop to stop after the current step; a second SIGINT aborts."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, _frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\nstopping after this step ({signal.Signals(signum).name}); "
              f"a checkpoint will be saved (press Ctrl-C again to abort)", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    def __init__(self, config: dict, name: str, task: TrainTask, do_eval: bool = False, debug: bool = False,
                 rank: int = 0, world_size: int = 1, device: torch.device | None = None):
        """``config``: a merged config (``utils.config.load_config``; every key is read without a
        fallback). ``rank`` / ``world_size``: this process in a started process group (see
        ``training.distributed.launch``); ``device`` overrides ``config['device']``."""
        self.config = config
        self.name = name
        self.task = task
        self.do_eval = do_eval
        self.debug = debug
        self.rank = rank
        self.world_size = world_size
        self.is_main = rank == 0
        self.distributed = world_size > 1
        if self.distributed and not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("Trainer: world_size > 1 needs an initialised process group "
                               "(use training.distributed.launch under torchrun)")
        check_optimization_config(config["model"], int(config["train_iter"]))  # bad values fail before any work
        self.device = device if device is not None else resolve_device(config["device"])
        self.amp_dtype = autocast_dtype(config["precision"], self.device)
        self.exp_dir = settings.exper_path() / name
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.runs_dir = settings.runs_path() / name
        self.writer = None
        self.last_metrics: dict = {}
        self._t0, self._seen = time.perf_counter(), 0

    # ------------------------------------------------------------------ setup
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _layout(self) -> dict:
        """The model section to build: the config's, or the layout recorded by the checkpoint to
        resume or the ``pretrained`` file when it names another network (``models.model_config_for``);
        it becomes the config's, so this run's checkpoints record it too."""
        mcfg = self.config["model"]
        source = latest_checkpoint(self.ckpt_dir)
        if source is None and self.config["pretrained"]:
            source = resolve_pretrained(self.config, "pretrained")
        if source is None:
            return mcfg
        layout = model_config_for(mcfg, read_weights(source, bool(self.config["weights_only"])))
        if layout is not mcfg:
            self._log(f"model: {mcfg['name']} {mcfg['params']} -> {layout['name']} "
                      f"{layout['params']}, the layout recorded by {source}")
            self.config["model"] = layout
        return layout

    def _build(self):
        mcfg = self._layout()
        net = build_model(mcfg)
        if self.distributed and self.device.type == "cuda" and bool(self.config["distributed"]["sync_batchnorm"]):
            # batch statistics over the global batch, as one process would see them
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # channels-last weights: measurably faster convolutions on CPU (oneDNN) and tensor cores
        self.net = net.to(self.device).to(memory_format=torch.channels_last)
        # frozen parts (model.freeze) keep their weights and batch-norm statistics
        self.frozen = frozen_modules(self.net, self.config["model"]["freeze"])
        trainable = [p for p in self.net.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError("model.freeze: every part of the network is frozen; nothing to train")
        # model.optimizer over the trainable parameters; model.scheduler steps once per iteration
        self.optimizer = build_optimizer(trainable, mcfg)
        self.scheduler = build_scheduler(self.optimizer, mcfg, int(self.config["train_iter"]))
        # fp16 needs loss scaling (bf16 has fp32's range and does not)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        self.n_iter = 0
        if self.is_main:
            self._load_initial_state()
        if self.distributed:
            self._share_initial_state()
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=bool(getattr(self.task, "unused_parameters", True)))
        else:
            self.model = self.net

    def _load_initial_state(self) -> None:
        """Resume from the latest checkpoint, else start from ``pretrained`` (rank 0)."""
        weights_only = bool(self.config["weights_only"])
        resume = latest_checkpoint(self.ckpt_dir)
        if resume is not None:
            ck = load_checkpoint(resume, weights_only=weights_only)
            load_state(self.net, extract_state_dict(ck), resume,
                       fix=f"it was written by another model.name / model.params: resume with the config "
                           f"saved in {self.exp_dir / 'config.yml'} or train under another experiment name")
            self.n_iter = int(ck.get("n_iter", 0))
            if self.scheduler is not None and "scheduler_state_dict" in ck:
                self.scheduler.load_state_dict(ck["scheduler_state_dict"])
            if "optimizer_state_dict" in ck:
                self.optimizer.load_state_dict(ck["optimizer_state_dict"])
            if "optimizer_state_dict" in ck or self.scheduler is not None:
                # the config's learning rate (and schedule, at this iteration) wins over the saved
                # one: lowering it for a resumed run works
                restart_schedule(self.optimizer, self.scheduler, self.config["model"], self.n_iter)
            if self.scaler is not None and "scaler_state_dict" in ck:
                self.scaler.load_state_dict(ck["scaler_state_dict"])
            self._log(f"resuming from {resume} (iteration {self.n_iter})")
        elif self.config["pretrained"]:
            path = resolve_pretrained(self.config, "pretrained")
            partial = bool(self.config["allow_partial_load"])
            obj = load_weights(self.net, path, strict=not partial, weights_only=weights_only,
                               fix="set model.name / model.params to the file's network, or allow_partial_load: "
                                   "true to start the tensors that do not fit from their initial values")
            self._report_partial_load(path, obj)
            if not self.config["reset_iter"] and isinstance(obj, dict) and "n_iter" in obj:
                self.n_iter = int(obj["n_iter"])
                if "optimizer_state_dict" in obj:
                    self.optimizer.load_state_dict(obj["optimizer_state_dict"])
                if self.scheduler is not None:  # the schedule continues from the file's iteration
                    restart_schedule(self.optimizer, self.scheduler, self.config["model"], self.n_iter)
            self._log(f"initialised from {path} (starting at iteration {self.n_iter})")

    def _share_initial_state(self) -> None:
        """Send rank 0's weights, optimizer / scaler state and iteration to every process, so all
        start from the same checkpoint (whether or not they can read its file)."""
        state = [None]
        if self.is_main:
            state = [{"model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                      "optimizer": self.optimizer.state_dict(), "n_iter": self.n_iter,
                      "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                      "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}]
        dist.broadcast_object_list(state, src=0, device=self._comm_device())
        if not self.is_main:
            st = state[0]
            self.net.load_state_dict(st["model"])
            self.optimizer.load_state_dict(st["optimizer"])
            if self.scaler is not None and st["scaler"] is not None:
                self.scaler.load_state_dict(st["scaler"])
            if self.scheduler is not None and st["scheduler"] is not None:
                self.scheduler.load_state_dict(st["scheduler"])
            self.n_iter = int(st["n_iter"])

    def _comm_device(self) -> torch.device:
        """Where collective tensors live: the GPU for NCCL, the CPU for gloo."""
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _agree(self, flags: list[bool]) -> list[bool]:
        """Each flag true on any process -> true on all (one small all-reduce)."""
        if not self.distributed:
            return flags
        t = torch.tensor([float(f) for f in flags], device=self._comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]

    def _mean_over_ranks(self, logs: dict) -> dict:
        """Average scalar logs over the processes (all must call this at the same steps)."""
        if not self.distributed or not logs:
            return logs
        keys = sorted(logs)
        t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def _step_randomness(self, batch_size: int) -> Randomness:
        """The random draws of this step: seeded by (seed, step); with several processes each
        keeps its samples' rows of the global batch (sampler order: row = k * world + rank)."""
        seed = step_seed(int(self.config["seed"]), self.n_iter)
        if not self.distributed:
            return Randomness.from_seed(seed, self.device)
        rows = torch.arange(batch_size) * self.world_size + self.rank
        return Randomness.from_seed(seed, self.device, rows=rows, global_batch=batch_size * self.world_size)

    def _report_partial_load(self, path: Path, obj) -> None:
        state = extract_state_dict(obj)
        own = self.net.state_dict()
        kept = [k for k in own if k not in state or own[k].shape != state[k].shape]
        if kept:  # only with allow_partial_load: true
            self._log(f"note: allow_partial_load: {len(kept)} of {len(own)} tensors not in {path.name} (or of "
                      f"another shape) keep their initial values (e.g. {kept[0]})")

    def _loaders(self):
        train_set, val_set = self.task.datasets()
        mcfg = self.config["model"]
        workers = int(self.config["num_workers"])
        common = dict(collate_fn=collate, num_workers=workers, pin_memory=self.device.type == "cuda",
                      worker_init_fn=_worker_out_of_the_stop_signals if workers else None,
                      persistent_workers=workers > 0)
        sampler = ResumableBatchSampler(len(train_set), int(mcfg["batch_size"]), seed=int(self.config["seed"]),
                                        start_iter=self.n_iter, rank=self.rank, world_size=self.world_size)
        self.train_loader = DataLoader(train_set, batch_sampler=sampler, **common)
        self.val_set = val_set
        self.val_loader = None
        if val_set is not None and self.do_eval and self.is_main:
            self.val_loader = DataLoader(val_set, batch_size=int(mcfg["eval_batch_size"]), shuffle=False,
                                         collate_fn=collate, num_workers=0)

    def _log(self, msg: str) -> None:
        if self.is_main:
            tqdm.write(msg)

    # ------------------------------------------------------------------ actions
    def save(self, loss: float | None = None) -> Path | None:
        """Rank 0 writes the checkpoint; every process must call this (they wait for the write).

        Weights that are not all finite are never saved (:class:`NonFiniteLoss`). TensorBoard is
        flushed first, so that every step a checkpoint covers is in the event file."""
        path = None
        bad = [k for k, v in self.net.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if self._agree([bool(bad)])[0]:
            good = latest_checkpoint(self.ckpt_dir)
            raise NonFiniteLoss(f"non-finite weights at iteration {self.n_iter} "
                                f"(e.g. {bad[0] if bad else 'on another process'}); not saved. "
                                f"The last good checkpoint is {good if good else '(none yet)'}")
        if self.writer is not None:
            self.writer.flush()
        if self.is_main:
            extra = {}
            if self.scaler is not None:
                extra["scaler_state_dict"] = self.scaler.state_dict()
            if self.scheduler is not None:
                extra["scheduler_state_dict"] = self.scheduler.state_dict()
            path = save_checkpoint(self.ckpt_dir, self.n_iter, self.net, self.optimizer, loss, self.config,
                                   keep=int(self.config["keep_checkpoints"]), extra=extra)
        self._barrier()
        return path

    def validate(self) -> dict:
        """Validation metrics (rank 0 only, on the unwrapped network; others return {})."""
        if self.val_loader is None or not self.is_main:
            return {}
        n = int(self.config["validation_size"])
        batches = (b for i, b in enumerate(self.val_loader) if n <= 0 or i < n)
        self.net.eval()
        try:
            with torch.no_grad(), self._autocast():
                metrics = self.task.validate(self.net, batches, self.device)
        finally:
            train_mode(self.net, self.frozen)
        return metrics

    def _tb_scalars(self, prefix: str, values: dict) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and math.isfinite(float(v)):
                self.writer.add_scalar(f"{prefix}/{k}", float(v), self.n_iter)

    def _tb_images(self, prepared: dict) -> None:
        if self.writer is None:
            return
        self.net.eval()
        try:
            with torch.no_grad(), self._autocast():
                images = self.task.show(self.net, prepared)
        finally:
            train_mode(self.net, self.frozen)
        for k, img in images.items():
            self.writer.add_image(f"train/{k}", img, self.n_iter, dataformats="HWC")

    def train(self) -> dict:
        """Run (or resume) training until ``train_iter``; returns the last validation metrics.

        Rank 0 holds the experiment folder's lock throughout (a second run of the same name fails
        at once) and first removes the temporary files a killed run may have left there."""
        if not self.is_main:
            return self._train()
        with folder_lock(self.exp_dir, "training"):
            for folder in (self.exp_dir, self.ckpt_dir):
                remove_stale_temp_files(folder)
            return self._train()

    def _batches(self, stop: "_StopFlag"):
        """The training batches; after a stop request, a DataLoader worker that died (of the same
        SIGTERM, sent to the whole process group before its handler was set) ends the loop
        instead of the run, so the stop checkpoint is still written."""
        it = iter(self.train_loader)
        while True:
            try:
                batch = next(it)
            except RuntimeError as e:
                if stop.signal is not None and "DataLoader worker" in str(e):
                    self._log(f"a data loading worker ended after the stop request ({e}); saving")
                    return
                raise
            yield batch

    def _train(self) -> dict:
        cfg = self.config
        torch.manual_seed(int(cfg["seed"]))
        self._build()
        total = int(cfg["train_iter"])
        if self.is_main:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, self.exp_dir / "config.yml")
        if self.n_iter >= total:
            self._log(f"nothing to do: {self.name} is already at iteration {self.n_iter} >= train_iter {total}")
            if not self.do_eval:
                return {}
            self._loaders()
            return self.validate()
        self._loaders()
        self._open_event_log(total)
        train_mode(self.model, self.frozen)
        self.last_metrics = {}
        last_loss = None
        self._t0, self._seen = time.perf_counter(), 0  # images per second since the last log
        bar = tqdm(total=total, initial=self.n_iter, desc=self.name, disable=not self.is_main, dynamic_ncols=True)
        started = time.monotonic()
        stopped = False
        try:
            with _StopFlag() as stop:
                for batch in self._batches(stop):
                    last_loss, logs, prepared, stopping = self._step(batch, stop)
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}")
                    self._log_step(last_loss, logs, prepared)
                    if self.do_eval and self.n_iter % int(cfg["validation_interval"]) == 0:
                        self._run_validation()
                    self._maybe_checkpoint(last_loss)
                    reason = self._should_stop(stop, stopping, total, started)
                    stopped = reason == "signal"
                    if reason is not None:
                        break
        except BaseException:
            bar.close()  # so that an error message starts on its own line
            if self.writer is not None:
                self.writer.close()
            raise
        bar.close()
        if stop.signal is not None:
            stopped = True
        path = self.save(last_loss)
        if not stopped and self.do_eval and self.n_iter % int(cfg["validation_interval"]) != 0:
            self._run_validation()  # the final one goes to TensorBoard too: the writer closes after it
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
        if stopped:
            self._log(f"stopped at iteration {self.n_iter}; checkpoint {path}. Re-run the same command to resume.")
            raise KeyboardInterrupt
        self._log(f"done: {self.name} at iteration {self.n_iter}; checkpoint {path}")
        return self.last_metrics

    # ------------------------------------------------------------------ the parts of a step
    def _open_event_log(self, total: int) -> None:
        """Rank 0: the TensorBoard writer and the line that says what this run does."""
        if not self.is_main:
            return
        # a resumed run logs again from step n_iter + 1: TensorBoard drops what a killed run
        # wrote there (steps up to n_iter were flushed with the checkpoint)
        self.writer = EventLog(self.runs_dir, purge_step=self.n_iter + 1 if self.n_iter > 0 else None)
        procs = f" x {self.world_size} processes" if self.distributed else ""
        self._log(f"training {self.name} on {self.device}{procs} "
                  f"({'fp32' if self.amp_dtype is None else str(self.amp_dtype).replace('torch.', '')}), "
                  f"iterations {self.n_iter} -> {total}; logs in {self.exp_dir}, TensorBoard in {self.runs_dir}")

    def _step(self, batch: dict, stop: _StopFlag) -> tuple[float, dict, dict, bool]:
        """One training step on ``batch``: forward, the cross-process checks, backward and update.

        Returns (loss, the task's logs, the prepared batch, whether any process was asked to stop).
        Raises :class:`NonFiniteLoss` (on every process) when any process's loss is not finite."""
        rng = self._step_randomness(len(batch["image"]))
        prepared = self.task.prepare(batch, True, rng, self.device)
        with self._autocast():
            loss, logs = self.task.loss(self.model, prepared)
        # every process learns whether any has a non-finite loss or was asked to stop
        bad, stopping = self._agree([not bool(torch.isfinite(loss.detach())), stop.signal is not None])
        if bad:
            self._stop_non_finite(float(loss.detach()))
        self._update(loss)
        self.n_iter += 1
        self._seen += prepared["image"].shape[0]
        return float(loss.detach()), logs, prepared, stopping

    def _stop_non_finite(self, value: float) -> None:
        """Raise :class:`NonFiniteLoss`; a checkpoint of this very step (its weights gave the
        non-finite loss) is not good and is renamed ``*.nonfinite``."""
        current = checkpoint_path(self.ckpt_dir, self.n_iter)
        if self.is_main and current.is_file():
            current.replace(current.with_name(current.name + NONFINITE_SUFFIX))
        good = latest_checkpoint(self.ckpt_dir)
        what = (f"non-finite loss ({value}{f' on rank {self.rank}' if self.distributed else ''})"
                if not math.isfinite(value) else "non-finite loss on another process")
        raise NonFiniteLoss(f"{what} at iteration {self.n_iter}; stopping. "
                            f"The last good checkpoint is {good if good else '(none yet)'}")

    def _update(self, loss: torch.Tensor) -> None:
        """Backward, gradient clipping (``model.grad_clip``), the optimiser step (through the
        loss scaler under fp16), then one step of the learning-rate schedule."""
        clip = float(self.config["model"]["grad_clip"])
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def _log_step(self, loss: float, logs: dict, prepared: dict) -> None:
        """TensorBoard after step ``n_iter``: the scalars (averaged over the processes; every
        process takes part) every ``tensorboard_interval`` steps, the task's images every
        ``train_show_interval`` steps."""
        cfg = self.config
        if self.n_iter % int(cfg["tensorboard_interval"]) == 0 or self.debug:
            dt = time.perf_counter() - self._t0
            logs = {k: float(v) for k, v in logs.items()}
            logs["loss"] = loss
            logs = self._mean_over_ranks(logs)
            logs["images_per_s"] = self.world_size * self._seen / dt if dt > 0 else 0.0
            if self.scheduler is not None:  # the rate of the next step
                logs["learning_rate"] = float(self.optimizer.param_groups[0]["lr"])
            self._tb_scalars("train", logs)
            self._t0, self._seen = time.perf_counter(), 0
        if self.n_iter % int(cfg["train_show_interval"]) == 0:
            self._tb_images(prepared)

    def _run_validation(self) -> dict:
        """Validate (rank 0), write the metrics to TensorBoard and log them in one line."""
        self.last_metrics = self.validate()
        self._tb_scalars("val", self.last_metrics)
        self._log(f"[{self.name} {self.n_iter}] val " + "  ".join(
            f"{k} {v:.4f}" for k, v in self.last_metrics.items() if isinstance(v, float)))
        return self.last_metrics

    def _maybe_checkpoint(self, loss: float) -> None:
        """Save every ``save_interval`` steps (all processes call this)."""
        if self.n_iter % int(self.config["save_interval"]) == 0:
            self.save(loss)

    def _should_stop(self, stop: _StopFlag, stopping: bool, total: int, started: float) -> str | None:
        """Why the loop ends after this step, else None: ``"signal"`` (Ctrl-C / SIGTERM, on any
        process), ``"done"`` (``train_iter`` reached) or ``"time"`` (``time_limit_minutes`` since
        ``started`` passed, on any process; every process asks at the same steps)."""
        if stopping if self.distributed else stop.signal is not None:
            return "signal"
        if self.n_iter >= total:
            return "done"
        limit = float(self.config["time_limit_minutes"]) * 60
        if limit > 0 and self._agree([time.monotonic() - started > limit])[0]:
            self._log(f"time limit of {limit / 60:g} min reached at iteration {self.n_iter}")
            return "time"
        return None
