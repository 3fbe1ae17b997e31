"""One prepared GPU check (issue 21): every figure the workbench needs from one GPU, in one call of at most ~8 minutes.

Usage:
    python scripts/gpu_check.py --out gpu_check.json             # on the GPU machine (default budget 420 s)
    python scripts/gpu_check.py --dry-run --out /tmp/dry.json    # CPU, tiny sizes, well under a minute
    python scripts/gpu_check.py --table-from gpu_check.json      # print the markdown table of an earlier run

Sections (each one in try/except; its error is recorded and the next one runs):
  step      every method's trainer step (`bench_step`: bf16 and channels-last on CUDA, ResNet-18, `cifar` preset heads)
            beside its backbone-pass limit, and beside lightly's step (`bench_peer`) where a peer exists;
  gpu       peak memory (allocated / reserved) and sampled GPU utilisation during each method's step benchmark;
  host_sync no host synchronisation inside `train_step` on CUDA (`torch.cuda.set_sync_debug_mode`), every method;
  decode    `torchvision.io.decode_jpeg` on the device (batched) and on the CPU, and the library's `DiskImages` stream;
  epoch     one epoch of CIFAR-10 size (50,000 images) for NNCLR, ExCB and DINO: resident uint8 tensor + on-device
            views (the trainer's `make_batch` / `train_step`) against a torchvision `DataLoader` with per-image
            transforms and workers; plus one `train(..., epochs=1)` call as a cross-check of the loop;
  compile   `torch.compile` of the backbone on and off for NNCLR (`bench_step(..., compile_backbone=...)`).

Time: `--budget` seconds are shared among the sections (time a section leaves unused passes to the later ones); a
section stops starting new items when its share is spent, an epoch stops mid-way (and is extrapolated, marked
`partial`). The JSON is rewritten after every item; a watchdog writes it and exits at `--hard-limit` seconds
whatever is running, and SIGTERM / SIGINT also write it first.
"""
from __future__ import annotations

import argparse, contextlib, dataclasses, datetime, gc, io, json, math, os, platform, signal, subprocess, sys
import tarfile, tempfile, threading, time, traceback, warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # the checkout this script belongs to

import numpy as np
import torch

SECTIONS = ("step", "gpu", "host_sync", "decode", "epoch", "compile")
# shares of the time budget; `gpu` is measured inside `step` and has none of its own
SHARES = dict(step=0.30, host_sync=0.08, decode=0.07, epoch=0.33, compile=0.22)
FULL = dict(backbone="resnet18", batch_size=256, image_size=32, steps=10, warmup=3, epoch_images=50_000,
            epoch_batch=None, epoch_warmup=5, workers=None, decode_images=4096, decode_seconds=3.0,
            compile_backend="inductor", sync_steps=3, sync_images=5000, budget=420.0, preset="cifar", threads=None)
DRY = dict(backbone="convnet", batch_size=8, image_size=16, steps=1, warmup=1, epoch_images=64,
           epoch_batch=16, epoch_warmup=1, workers=2, decode_images=128, decode_seconds=0.2,
           compile_backend="eager", sync_steps=1, sync_images=64, budget=100.0, preset="small", threads=1)
EPOCH_METHODS = ("nnclr", "excb", "dino")


def log(msg):
    print(f"[gpu_check {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)

T0 = time.monotonic()


def clean(x):
    "`x` as plain JSON: tensors and numpy scalars to numbers, non-finite floats to the strings 'nan' / 'inf' / '-inf'."
    if isinstance(x, dict): return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)): return [clean(v) for v in x]
    if torch.is_tensor(x): x = x.item() if x.numel() == 1 else x.tolist()
    if isinstance(x, np.generic): x = x.item()
    if isinstance(x, float) and not math.isfinite(x): return str(x)
    if isinstance(x, (str, int, float, bool)) or x is None: return x
    return str(x)


def short_error(e: BaseException) -> dict:
    "The error's type and message, and the last frames of its traceback."
    tb = traceback.format_exception(type(e), e, e.__traceback__)
    return dict(type=type(e).__name__, message=" ".join(str(e).split())[:1000], traceback="".join(tb[-4:])[-3000:])


class Report:
    "The results dict, written atomically to `path` after every item (and by the watchdog / signal handlers)."
    def __init__(self, path: Path, data: dict):
        self.path, self.data, self.lock = Path(path), data, threading.RLock()

    def section(self, name) -> dict:
        with self.lock: return self.data["sections"].setdefault(name, {})

    def put(self, d: dict, key, value):
        with self.lock: d[key] = value

    def write(self):
        with self.lock:
            self.data["wall_s"] = time.monotonic() - T0
            text = json.dumps(clean(self.data), indent=1)
        tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text); os.replace(tmp, self.path)


class Budget:
    "The global deadline, and each section's share of what is left when it starts (unused time passes on)."
    def __init__(self, seconds: float, sections):
        self.end = time.monotonic() + seconds
        self.pending = {s: SHARES[s] for s in sections if s in SHARES}
        self.section_end = self.end

    def start(self, name) -> float:
        share = self.pending.pop(name, 0.0)
        total = share + sum(self.pending.values())
        self.section_end = time.monotonic() + max(0.0, self.end - time.monotonic()) * (share / total if total else 1.0)
        return self.section_end - time.monotonic()

    def left(self) -> float: return min(self.section_end, self.end) - time.monotonic()


# ---------------------------------------------------------------------------------------------------------------------
# GPU utilisation sampling

class UtilSampler:
    """Samples GPU utilisation (%) and used memory (MiB) in a background thread from `read()`; `pynvml` (nvidia-ml-py)
    when importable, else `nvidia-smi`. `UtilSampler.for_device(device)` gives (sampler or None, source or reason)."""
    def __init__(self, read, interval=0.1, source="custom"):
        self.read, self.interval, self.source = read, interval, source
        self.samples, self._stop, self._thread, self.errors = [], threading.Event(), None, 0

    @classmethod
    def for_device(cls, device):
        device = torch.device(device)
        if device.type != "cuda": return None, f"no CUDA device (device {device})"
        try:     # torch's NVML helpers (need nvidia-ml-py); they map CUDA_VISIBLE_DEVICES to NVML's index
            read = lambda: (float(torch.cuda.utilization(device)), torch.cuda.device_memory_used(device) / 2**20)
            read()
            return cls(read, 0.1, "pynvml (torch.cuda.utilization)"), "pynvml (torch.cuda.utilization)"
        except Exception as e:
            why = f"pynvml: {type(e).__name__}: {e}"
        uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
        cmd = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        for sel in ([f"--id={uuid if uuid.startswith(('GPU-', 'MIG-')) else 'GPU-' + uuid}"] if uuid else []) + [None]:
            read = lambda c=cmd + ([sel] if sel else []): _smi(c)
            try: read()
            except Exception as e: why += f"; nvidia-smi {sel or ''}: {type(e).__name__}: {e}"; continue
            src = "nvidia-smi" + ("" if sel else " (first GPU listed: the UUID did not select one)")
            return cls(read, 0.25, src), src
        return None, why

    def _run(self):
        while not self._stop.is_set():
            try: self.samples.append(self.read())
            except Exception: self.errors += 1
            self._stop.wait(self.interval)

    def __enter__(self):
        self.samples, self.errors = [], 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="util-sampler"); self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set(); self._thread.join(timeout=10)

    def summary(self) -> dict:
        u = [s[0] for s in self.samples]; m = [s[1] for s in self.samples]
        if not u: return dict(util_source=self.source, util_samples=0, util_errors=self.errors)
        return dict(util_source=self.source, util_samples=len(u), util_mean_pct=float(np.mean(u)),
                    util_max_pct=float(np.max(u)), util_p50_pct=float(np.median(u)), nvml_mem_used_max_mib=float(np.max(m)),
                    util_errors=self.errors)


def _smi(cmd):
    "(utilisation %, used MiB) of the first GPU `nvidia-smi` lists for `cmd`."
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=5, check=True).stdout.strip().splitlines()
    u, m = out[0].split(",")
    return float(u), float(m)


@contextlib.contextmanager
def measured(device, sampler, into: dict):
    "Peak CUDA memory and sampled utilisation of the block, written into `into` (a skip reason on the CPU)."
    cuda = device.type == "cuda"
    if cuda: torch.cuda.synchronize(device); torch.cuda.reset_peak_memory_stats(device)
    ctx = sampler if sampler is not None else contextlib.nullcontext()
    try:
        with ctx: yield
    finally:
        if cuda:
            torch.cuda.synchronize(device)
            into.update(max_allocated_gib=torch.cuda.max_memory_allocated(device) / 2**30,
                        max_reserved_gib=torch.cuda.max_memory_reserved(device) / 2**30)
        else: into["memory_skipped"] = f"torch.cuda memory statistics need CUDA (device {device})"
        if sampler is not None: into.update(sampler.summary())


def free(device):
    gc.collect()
    if device.type == "cuda": torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------------------------
# data

def load_base():
    "The embedded 5,000-image CIFAR-10 subset (resident uint8)."
    from ssl_workbench.data import load_dataset
    return load_dataset("cifar10_5k")


def epoch_data(a, cache):
    "(ImageData of `a.epoch_images` train images, description): `--data` if given, else the embedded subset tiled."
    from ssl_workbench.data import load_dataset
    t = time.perf_counter()
    if a.data:
        data = load_dataset("folder", path=a.data)
        what = f"folder dataset {a.data} ({data.n_train} train images)"
    else:
        data = cache.setdefault("base", load_base())
        what = f"embedded cifar10_5k ({data.n_train} train images)"
    n = a.epoch_images
    if data.streamed: raise RuntimeError(f"{a.data} is too large to hold in memory here; pass a smaller dataset")
    if n != data.n_train:   # tiled (whole copies, then the first images), or evenly spaced ones (every class)
        tiled = n > data.n_train
        idx = torch.arange(n) % data.n_train if tiled else torch.linspace(0, data.n_train - 1, n).round().long()
        data = dataclasses.replace(data, name=f"{data.name}x{n}", train_x=data.train_x[idx], train_y=data.train_y[idx])
        what += f" tiled to {n:,} images" if tiled else f", {n:,} evenly spaced images"
    return data, what, time.perf_counter() - t


def jpeg_bytes(path, n):
    "Up to `n` JPEG files (uint8 byte tensors, train/ first) from a folder or a tar archive."
    path, out = Path(path), []
    is_jpg = lambda s: s.lower().endswith((".jpg", ".jpeg")) and not Path(s).name.startswith(".")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_jpg(p.name))
        files.sort(key=lambda p: "train" not in p.parts)
        for p in files[:n]: out.append(torch.from_numpy(np.fromfile(p, dtype=np.uint8)))
    else:
        with tarfile.open(path) as tar:
            for m in tar:
                if m.isfile() and is_jpg(m.name):
                    out.append(torch.frombuffer(bytearray(tar.extractfile(m).read()), dtype=torch.uint8))
                    if len(out) == n: break
    if not out: raise ValueError(f"no JPEG files (*.jpg, *.jpeg) in {path}")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# sections

def section_step(a, rep, budget, device, sampler, ctx):
    "1 + 2: every method's step beside its backbone passes and lightly's step; memory and utilisation."
    from ssl_workbench.bench import bench_step, bench_peer, PEER_METHODS
    sec, gpu = rep.section("step"), rep.section("gpu")
    try: import lightly; peer_why = None; rep.put(sec, "lightly", lightly.__version__)
    except ImportError as e: peer_why = f"lightly is not installed ({e}); pip install -e .[bench]"
    rep.put(sec, "config", dict(backbone=a.backbone, preset=a.preset, batch_size=a.batch_size, image_size=a.image_size,
                                steps=a.steps, warmup=a.warmup, device=str(device), channels_last=True,
                                precision="bf16 autocast" if device.type == "cuda" else "fp32",
                                timing="median wall seconds per step; step = forward + backward + optimiser; backbone = "
                                       "the bare backbone passes of the same views (the limit); ratio = step / backbone"))
    rep.put(gpu, "sampler", ctx["sampler_source"])
    rep.put(gpu, "note", "per_method: over the whole bench_step call (model construction included); the epoch section "
                         "records utilisation over steady training")
    if device.type != "cuda":
        rep.put(gpu, "status", "skipped"); rep.put(gpu, "reason", f"GPU memory and utilisation need CUDA (device {device})")
    methods = sec.setdefault("methods", {}); per_gpu = gpu.setdefault("per_method", {})
    for m in a.methods:
        row = methods.setdefault(m, {})
        if budget.left() <= 0:
            rep.put(row, "skipped", "time budget of the section spent"); continue
        try:
            g = per_gpu.setdefault(m, {})
            with measured(device, sampler, g):
                r = bench_step(m, backbone=a.backbone, batch_size=a.batch_size, image_size=a.image_size, steps=a.steps,
                               warmup=a.warmup, device=str(device), preset=a.preset, channels_last=True, verbose=False)
            rep.put(row, "ours", r)
            log(f"step {m}: {r['step'] * 1e3:.1f} ms, backbone passes {r['backbone'] * 1e3:.1f} ms, ratio {r['ratio']:.2f}")
        except Exception as e:
            rep.put(row, "error", short_error(e)); log(f"step {m}: {type(e).__name__}: {e}")
        free(device)
        if m not in PEER_METHODS: rep.put(row, "peer", dict(skipped=f"no lightly peer for {m} (peers: {', '.join(PEER_METHODS)})"))
        elif peer_why: rep.put(row, "peer", dict(skipped=peer_why))
        elif budget.left() <= 0: rep.put(row, "peer", dict(skipped="time budget of the section spent"))
        else:
            try:
                with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)     # lightly's DINO head uses weight_norm
                    p = bench_peer(m, backbone=a.backbone, batch_size=a.batch_size, image_size=a.image_size, steps=a.steps,
                                   warmup=a.warmup, device=str(device), preset=a.preset, verbose=False)
                rep.put(row, "peer", p)
                log(f"peer {m}: ours {p['ours'] * 1e3:.1f} ms, lightly {p['lightly'] * 1e3:.1f} ms, ratio {p['ratio']:.2f}")
            except Exception as e:
                rep.put(row, "peer", dict(error=short_error(e))); log(f"peer {m}: {type(e).__name__}: {e}")
            free(device)
        rep.write()
    rep.put(sec, "status", "ok" if any("ours" in r for r in methods.values()) else "error")
    if device.type == "cuda": rep.put(gpu, "status", "ok" if any(per_gpu.values()) else "error")


def _run_for(method, a, device, data, batch_size, tmp):
    "A trainer `Run` (build_run) of `method` with the configured backbone and preset on `data`, set up and bound."
    from ssl_workbench.core import get_method_class
    from ssl_workbench.train import resolve_configs, build_run
    M = get_method_class(method)
    preset = a.preset if a.preset in M.presets else "small"
    tcfg, mcfg = resolve_configs(M, preset, backbone=a.backbone, batch_size=batch_size, device=str(device), epochs=1,
                                 progress=False, compile_backbone=False)
    run = build_run(M, preset, tcfg, mcfg, Path(tmp) / method, data)
    gen = torch.Generator(device=run.device); gen.manual_seed(0)
    run.method.setup(run.data, run.view_maker, run.device); run.method.bind(run.data, run.view_maker, gen)
    run.method.train()
    return run, tcfg, gen


@contextlib.contextmanager
def sync_watch(records: list, mode="warn"):
    "Record the host synchronisations (`torch.cuda.set_sync_debug_mode`) of the block as (where, message)."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode(mode)
        try: yield
        finally: torch.cuda.set_sync_debug_mode(0)
    for w in caught:
        if "synchroniz" in str(w.message).lower(): records.append((f"{w.filename}:{w.lineno}", str(w.message).splitlines()[0]))


def section_host_sync(a, rep, budget, device, ctx):
    "6: no host synchronisation inside the trainer's step (CUDA); the batch maker's are recorded beside it."
    from ssl_workbench.core import Progress
    from ssl_workbench.train import make_batch, train_step, NumericGuard
    sec = rep.section("host_sync")
    cuda = device.type == "cuda"
    rep.put(sec, "config", dict(method_steps=a.sync_steps, warmup_steps=2, batch_size=a.batch_size, backbone=a.backbone,
                                how="torch.cuda.set_sync_debug_mode('warn') around train_step (the step) and, apart, "
                                    "make_batch (the batch); a failing method reruns one step in 'error' mode for its traceback"))
    if not cuda:
        rep.put(sec, "status", "skipped")
        rep.put(sec, "reason", f"set_sync_debug_mode needs CUDA (device {device}); on CPU the steps below ran without the "
                               f"monitor, and tests/test_hostsync.py checks the same on CPU by patching the host reads")
    base = ctx.setdefault("base", load_base())
    if a.sync_images < base.n_train:
        idx = torch.linspace(0, base.n_train - 1, a.sync_images).round().long()
        base = dataclasses.replace(base, train_x=base.train_x[idx], train_y=base.train_y[idx])
    rep.put(sec, "data", f"embedded cifar10_5k, {base.n_train} train images on {device}")
    methods = sec.setdefault("methods", {})
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.methods:
            row = methods.setdefault(m, {})
            if budget.left() <= 0: rep.put(row, "skipped", "time budget of the section spent"); continue
            try:
                if "sync_data" not in ctx: ctx["sync_data"] = _placed(base, device)
                run, tcfg, gen = _run_for(m, a, device, ctx["sync_data"], min(a.batch_size, base.n_train), tmp)
                B, n = tcfg.batch_size, run.data.n_train
                perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(run.data.train_x.device)  # as `train`
                guard = NumericGuard(run.method, 0)
                prog = Progress(step=0, epoch=0, steps_per_epoch=n // B, epochs=1)
                plain = contextlib.nullcontext
                def one(i, batch_watch=plain, step_watch=plain):
                    idx = perm[(i * B) % (n - B + 1):][:B]
                    with batch_watch(): batch = make_batch(run.data, idx, run.view_maker, gen, run.device)
                    with step_watch(): train_step(run.method, run.optimizer, batch, prog, tcfg, run.amp, guard=guard)
                    prog.step += 1
                for i in range(2): one(i)
                if cuda: torch.cuda.synchronize(device)
                step_rec, batch_rec = [], []
                for i in range(2, 2 + a.sync_steps):
                    if cuda: one(i, lambda: sync_watch(batch_rec), lambda: sync_watch(step_rec))
                    else: one(i)
                if cuda: torch.cuda.synchronize(device)
                guard.check(prog.step)
                r = dict(steps=a.sync_steps, step_syncs=len(step_rec), batch_syncs=len(batch_rec))
                if cuda:
                    r["step_pass"] = not step_rec
                    if step_rec:
                        r["step_first"], r["step_sites"] = step_rec[0], sorted({w for w, _ in step_rec})
                        try:
                            one(2 + a.sync_steps, plain, lambda: sync_watch([], "error"))
                            r["error_mode"] = "no error raised in 'error' mode"
                        except RuntimeError as e: r["error_mode"] = short_error(e)
                    if batch_rec: r["batch_first"], r["batch_sites"] = batch_rec[0], sorted({w for w, _ in batch_rec})
                else: r["skipped"] = "no monitor on CPU"
                rep.put(row, "result", r)
                log(f"host_sync {m}: " + (f"step syncs {len(step_rec)}, batch syncs {len(batch_rec)}" if cuda else "ran (CPU, no monitor)"))
                run = guard = one = None   # free the model before the next one is built
            except Exception as e:
                if cuda: torch.cuda.set_sync_debug_mode(0)
                rep.put(row, "error", short_error(e)); log(f"host_sync {m}: {type(e).__name__}: {e}")
            free(device); rep.write()
    if cuda:
        res = [r.get("result", {}) for r in methods.values()]
        checked = [r for r in res if "step_pass" in r]
        rep.put(sec, "status", "error" if not checked else "ok" if len(checked) == len(a.methods) else "partial")
        rep.put(sec, "methods_checked", len(checked))
        rep.put(sec, "pass", bool(checked) and all(r["step_pass"] for r in checked))


def _placed(data, device):
    from ssl_workbench.data import place
    return place(data, device)


def _rate(fn, n_items, seconds, device, min_calls=1):
    "Items per second of `fn()` (each call `n_items`), repeated for about `seconds` (at least `min_calls` calls)."
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    sync(); t, calls = time.perf_counter(), 0
    while calls < min_calls or time.perf_counter() - t < seconds:
        fn(); calls += 1
    sync()
    return dict(images_per_s=calls * n_items / (time.perf_counter() - t), calls=calls, images=calls * n_items)


def section_decode(a, rep, budget, device, ctx):
    "4: JPEG decoding (torchvision.io.decode_jpeg) batched on the device and on the CPU; the library's DiskImages stream."
    from torchvision.io import decode_jpeg, encode_jpeg
    from ssl_workbench.data import DiskImages, embedded_path
    sec = rep.section("decode")
    cuda = device.type == "cuda"
    src = a.jpegs or a.data or str(embedded_path())
    t = time.perf_counter()
    files = jpeg_bytes(src, a.decode_images)
    sets = {"source": (files, f"{len(files)} JPEGs from {src}" + (" (the embedded CIFAR-10 subset, 32×32 as stored)"
                                                                   if src == str(embedded_path()) else ""))}
    base = ctx.setdefault("base", load_base())
    k = min(len(base.train_x), max(8, a.decode_images // 8))
    big = torch.nn.functional.interpolate(base.train_x[:k].float(), size=224, mode="bilinear", antialias=False).round().clamp(0, 255).to(torch.uint8)
    sets["encoded_224"] = ([encode_jpeg(im, quality=90) for im in big],
                           f"{k} embedded images upscaled to 224×224, encoded to JPEG (quality 90) in memory")
    rep.put(sec, "prepare_s", time.perf_counter() - t)
    B = min(256, a.decode_images)
    rep.put(sec, "config", dict(batch=B, seconds_per_figure=a.decode_seconds, device=str(device)))
    for name, (data, what) in sets.items():
        row = sec.setdefault(name, {}); rep.put(row, "what", what)
        rep.put(row, "mean_bytes", float(np.mean([len(d) for d in data])))
        batches = [data[i:i + B] for i in range(0, len(data), B)]
        it = {"i": 0}
        def nxt():
            b = batches[it["i"] % len(batches)]; it["i"] += 1; return b
        for dev in (["cuda"] if cuda else []) + ["cpu"]:
            if budget.left() <= 0: rep.put(row, dev, dict(skipped="time budget of the section spent")); continue
            try:
                d = device if dev == "cuda" else torch.device("cpu")
                decode_jpeg(batches[0], device=d)   # warm-up (nvJPEG handles)
                r = _rate(lambda: decode_jpeg(nxt(), device=d), len(batches[0]), min(a.decode_seconds, max(0.1, budget.left() / 4)), d)
                rep.put(row, dev, r); log(f"decode {name} on {dev}: {r['images_per_s']:,.0f} images/s")
            except Exception as e: rep.put(row, dev, dict(error=short_error(e)))
        if not cuda: rep.put(row, "cuda", dict(skipped=f"decode on the device needs CUDA (device {device})"))
    # the library's streaming path: files in a folder, read by threads and decoded onto the device in one call per batch
    row = sec.setdefault("diskimages", {})
    if budget.left() <= 0: rep.put(row, "skipped", "time budget of the section spent")
    else:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                paths = []
                for i, d in enumerate(files):
                    p = Path(tmp) / f"{i:06d}.jpg"; p.write_bytes(d.numpy().tobytes()); paths.append(p)
                size = int(decode_jpeg(files[0]).shape[-1])
                x = DiskImages(paths, size, resize=True, device=device, root=tmp)
                B = max(1, min(B, len(paths) // 4))
                nb = max(1, len(paths) // B)
                perm = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0))[:nb * B].view(nb, B)
                x.prefetch(perm)
                x[perm[0]]   # warm-up
                sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
                sync(); t = time.perf_counter()
                for b in perm[1:] if nb > 1 else perm: out = x[b]
                sync(); dt = time.perf_counter() - t
                n = (nb - 1 if nb > 1 else 1) * B
                rep.put(row, "result", dict(images_per_s=n / dt, images=n, image_size=size, device=str(device), workers=x.workers,
                                            served=dict(x.served), shape=list(out.shape)))
                rep.put(row, "what", f"DiskImages over {len(paths)} JPEG files of the source, batch {B}, decoded onto {device}")
                log(f"decode DiskImages on {device}: {n / dt:,.0f} images/s")
        except Exception as e: rep.put(row, "error", short_error(e))
    rep.put(sec, "status", "ok")
    rep.write()


class _PerImage(torch.utils.data.Dataset):
    "Per-image torchvision views (PIL, as torchvision's CIFAR10 gives images) of uint8 N×3×H×W images, with index and label."
    def __init__(self, x, y, transforms):
        self.x, self.y, self.transforms = x.permute(0, 2, 3, 1).numpy(), y, transforms
    def __len__(self): return len(self.x)
    def __getitem__(self, i):
        from PIL import Image
        img = Image.fromarray(self.x[i])
        return (i, torch.from_numpy(self.x[i]).permute(2, 0, 1), self.y[i], *(t(img) for t in self.transforms))


def _one_thread(_): torch.set_num_threads(1)


def _epoch(method, feed, a, device, data, data_cpu, deadline, sampler, tmp):
    "One timed epoch of `method` fed by `feed` ('resident' or 'dataloader'), after `a.epoch_warmup` untimed steps."
    from ssl_workbench.core import Progress
    from ssl_workbench.augment import reference_transform
    from ssl_workbench.train import make_batch, train_step, NumericGuard
    run, tcfg, gen = _run_for(method, a, device, data, a.epoch_batch, tmp)
    model, opt, vm, amp, cuda = run.method, run.optimizer, run.view_maker, run.amp, device.type == "cuda"
    n, B = run.data.n_train, tcfg.batch_size
    spe = n // B
    prog = Progress(step=0, epoch=0, steps_per_epoch=spe, epochs=1)
    guard = NumericGuard(model, 0)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(run.data.train_x.device)   # as `train`
    for i in range(a.epoch_warmup):                   # untimed: cuDNN plans, allocator, lazy buffers
        train_step(model, opt, make_batch(run.data, perm[i * B:(i + 1) * B], vm, gen, device), prog, tcfg, amp, guard=guard)
    guard.check(prog.step)
    if feed == "resident":
        batches = (make_batch(run.data, perm[it * B:(it + 1) * B], vm, gen, device) for it in range(spe))
        workers = 0
    else:
        specs = model.view_specs(run.data.image_size)
        ds = _PerImage(data_cpu.train_x, data_cpu.train_y, [reference_transform(s, run.data.mean, run.data.std) for s in specs])
        workers = a.workers
        loader = torch.utils.data.DataLoader(ds, batch_size=B, shuffle=True, drop_last=True, num_workers=workers,
                                             pin_memory=cuda, worker_init_fn=_one_thread if workers else None,
                                             prefetch_factor=4 if workers else None,
                                             generator=torch.Generator().manual_seed(0))
        fmt = torch.channels_last if cuda else torch.contiguous_format
        def gen_batches():
            for idx, imgs, labels, *views in loader:
                yield dict(views=[v.to(device, non_blocking=True).contiguous(memory_format=fmt) for v in views],
                           index=idx.to(device, non_blocking=True), labels=labels.to(device, non_blocking=True),
                           images=imgs.to(device, non_blocking=True))
        batches = gen_batches()
    into, window, n_win, steps, last_loss, partial = {}, {}, 0, 0, None, False
    with measured(device, sampler, into):
        t = time.perf_counter()
        for batch in batches:
            out = train_step(model, opt, batch, prog, tcfg, amp, guard=guard)
            for k, v in {"loss/total": out.loss.detach(), **out.terms, **out.stats}.items():   # as the trainer logs
                window[k] = window.get(k, 0) + (v.detach() if torch.is_tensor(v) else v)
            steps += 1; n_win += 1; prog.step += 1
            if n_win == tcfg.log_every or steps == spe:
                last_loss = float(window["loss/total"]) / n_win
                guard.check(prog.step, last_loss); window, n_win = {}, 0
            if time.monotonic() > deadline and steps < spe: partial = True; break
        if cuda: torch.cuda.synchronize(device)
        dt = time.perf_counter() - t
        if feed != "resident": batches.close(); del loader
    ips = steps * B / dt
    r = dict(steps=steps, steps_per_epoch=spe, batch_size=B, images=steps * B, seconds=dt, images_per_s=ips,
             epoch_s=dt if not partial else spe * B / ips, partial=partial, last_loss=last_loss, workers=workers,
             views=len(vm.specs), **into)
    del run, model, opt
    return r


def section_epoch(a, rep, budget, device, sampler, ctx):
    "3: one epoch from the resident uint8 tensor with on-device views against a per-image DataLoader; one train() call."
    from ssl_workbench.train import train
    sec = rep.section("epoch")
    data, what, load_s = epoch_data(a, ctx)
    data_dev = _placed(data, device)
    rep.put(sec, "data", dict(what=what, n_train=data.n_train, image_size=data.image_size, load_s=load_s,
                              on_device=str(data_dev.train_x.device), synthetic_tiling=not a.data and a.epoch_images > 5000))
    rep.put(sec, "config", dict(backbone=a.backbone, preset=a.preset, batch_size=a.epoch_batch, warmup_steps=a.epoch_warmup,
                                dataloader_workers=a.workers, device=str(device),
                                loop="the trainer's pieces: build_run, make_batch (resident) or the DataLoader batch, "
                                     "train_step with NumericGuard, trainer-style log-boundary reads every log_every steps"))
    methods = sec.setdefault("methods", {})
    jobs = [(m, feed) for m in a.epoch_methods for feed in ("resident", "dataloader")]
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.epoch_methods:
            row = methods.setdefault(m, {})
            for feed in ("resident", "dataloader"):
                left = budget.left()
                if left <= 1: rep.put(row, feed, dict(skipped="time budget of the section spent")); continue
                todo = len(jobs) - jobs.index((m, feed)) + 1   # what is left, shared by the epochs to run and train()
                try:
                    r = _epoch(m, feed, a, device, data_dev, data, time.monotonic() + left / todo, sampler, tmp)
                    rep.put(row, feed, r)
                    log(f"epoch {m} {feed}: {r['epoch_s']:.2f} s ({r['images_per_s']:,.0f} images/s"
                        f"{', partial: extrapolated' if r['partial'] else ''})")
                except Exception as e:
                    rep.put(row, feed, dict(error=short_error(e))); log(f"epoch {m} {feed}: {type(e).__name__}: {e}")
                free(device); rep.write()
            res, dl = row.get("resident", {}), row.get("dataloader", {})
            if "images_per_s" in res and "images_per_s" in dl: rep.put(row, "speedup", res["images_per_s"] / dl["images_per_s"])
        # the trainer itself, once: train(..., epochs=1) on the same ImageData (cold start included, no evaluation)
        row = sec.setdefault("train_call", {})
        m = a.epoch_methods[0] if a.epoch_methods else "nnclr"
        if budget.left() <= 1: rep.put(row, "skipped", "time budget of the section spent")
        else:
            try:
                end = time.monotonic() + budget.left()
                class Stop:
                    def on_log(self, run, r):
                        if time.monotonic() > end: run.request_stop()
                from ssl_workbench.core import get_method_class
                M = get_method_class(m)
                t = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    run = train(m, data=data_dev, epochs=1, preset=a.preset if a.preset in M.presets else "small",
                                backbone=a.backbone, batch_size=a.epoch_batch, device=str(device), progress=False,
                                eval_at_start=False, eval_every=0, run_dir=str(Path(tmp) / "train_call"), callbacks=[Stop()])
                wall = time.perf_counter() - t
                ep = run.epochs[-1] if run.epochs else {}
                steps = run.steps[-1]["step"] if run.steps else 0
                rep.put(row, "result", dict(method=m, status=run.status, steps=steps, epoch_s=ep.get("time/epoch_s"),
                                            call_s=wall, images_per_s=(steps * a.epoch_batch / ep["time/epoch_s"]) if ep else None,
                                            loss=ep.get("loss/total")))
                log(f"train() {m}: status {run.status}, epoch {ep.get('time/epoch_s', float('nan')):.2f} s, call {wall:.1f} s")
                del run
            except Exception as e:
                rep.put(row, "error", short_error(e)); log(f"train() {m}: {type(e).__name__}: {e}")
            free(device)
    rep.put(sec, "status", "ok"); rep.write()


@contextlib.contextmanager
def compile_backend(backend):
    "`nn.Module.compile` with `backend` by default (the library calls it without one)."
    orig = torch.nn.Module.compile
    def patched(self, *args, **kw):
        kw.setdefault("backend", backend); return orig(self, *args, **kw)
    torch.nn.Module.compile = patched
    try: yield
    finally: torch.nn.Module.compile = orig


def section_compile(a, rep, budget, device, sampler, ctx):
    "5: torch.compile of the backbone on and off for NNCLR (bench_step's compile_backbone override)."
    from ssl_workbench.bench import bench_step
    sec = rep.section("compile")
    m = "nnclr"
    rep.put(sec, "config", dict(method=m, backend=a.compile_backend, backbone=a.backbone, batch_size=a.batch_size,
                                steps=a.steps, warmup=max(a.warmup, 2), device=str(device),
                                note="call_s includes the compilation (in the warm-up steps)"))
    for key, on in (("eager", False), ("compiled", True)):
        if budget.left() <= 0: rep.put(sec, key, dict(skipped="time budget of the section spent")); continue
        try:
            into = {}
            t = time.perf_counter()
            with measured(device, None, into), (compile_backend(a.compile_backend) if on else contextlib.nullcontext()):
                r = bench_step(m, backbone=a.backbone, batch_size=a.batch_size, image_size=a.image_size, steps=a.steps,
                               warmup=max(a.warmup, 2), device=str(device), preset=a.preset, verbose=False, compile_backbone=on)
            rep.put(sec, key, dict(step=r["step"], backbone=r["backbone"], ratio=r["ratio"], call_s=time.perf_counter() - t, **into))
            log(f"compile {key}: step {r['step'] * 1e3:.1f} ms, call {time.perf_counter() - t:.1f} s")
        except Exception as e:
            rep.put(sec, key, dict(error=short_error(e))); log(f"compile {key}: {type(e).__name__}: {e}")
        free(device); rep.write()
    if "step" in sec.get("eager", {}) and "step" in sec.get("compiled", {}):
        rep.put(sec, "speedup", sec["eager"]["step"] / sec["compiled"]["step"])
    torch._dynamo.reset()
    rep.put(sec, "status", "ok" if "speedup" in sec else "partial")


# ---------------------------------------------------------------------------------------------------------------------
# the table

def _f(x, scale=1.0, fmt="{:.1f}"):
    return fmt.format(x * scale) if isinstance(x, (int, float)) and not isinstance(x, bool) else "—"


def table(res: dict) -> str:
    "A short markdown summary of a result dict (as written to the JSON)."
    env, S = res.get("env", {}), res.get("sections", {})
    L = [f"GPU check {res.get('started', '')[:10]} on {env.get('device_name', '?')} (torch {env.get('torch', '?')})"
         + (" — DRY RUN: CPU, tiny sizes, not figures to quote" if res.get("dry_run") else "")
         + (f" — ABORTED: {res['aborted']}" if res.get("aborted") else ""), ""]
    st, gpu = S.get("step", {}), S.get("gpu", {}).get("per_method", {})
    c = st.get("config", {})
    L += [f"Step ({c.get('backbone')}, batch {c.get('batch_size')}, {c.get('image_size')} px, {c.get('precision')}, "
          f"channels-last, {c.get('preset')} preset heads; median ms):", "",
          "| method | step ms | backbone ms | ratio | lightly ms | ours / lightly | peak alloc GiB |",
          "|---|---|---|---|---|---|---|"]
    for m, row in st.get("methods", {}).items():
        o, p, g = row.get("ours", {}), row.get("peer", {}), gpu.get(m, {})
        note = " (error)" if "error" in row else (" (skipped)" if "skipped" in row else "")
        L.append(f"| {m}{note} | {_f(o.get('step'), 1e3)} | {_f(o.get('backbone'), 1e3)} | {_f(o.get('ratio'), 1, '{:.2f}')} | "
                 f"{_f(p.get('lightly'), 1e3)} | {_f(p.get('ratio'), 1, '{:.2f}')} | {_f(g.get('max_allocated_gib'), 1, '{:.2f}')} |")
    ep = S.get("epoch", {})
    if ep.get("methods"):
        d, ec = ep.get("data", {}), ep.get("config", {})
        L += ["", f"Epoch ({d.get('n_train', 0):,} images, {d.get('what', '')}; batch {ec.get('batch_size')}):", "",
              "| method | on-device epoch s | images/s | GPU util % | DataLoader epoch s | images/s | GPU util % | workers | on-device / DataLoader |",
              "|---|---|---|---|---|---|---|---|---|"]
        for m, row in ep["methods"].items():
            r, l = row.get("resident", {}), row.get("dataloader", {})
            mark = lambda x: "*" if x.get("partial") else ""
            L.append(f"| {m} | {_f(r.get('epoch_s'), 1, '{:.2f}')}{mark(r)} | {_f(r.get('images_per_s'), 1, '{:,.0f}')} | "
                     f"{_f(r.get('util_mean_pct'), 1, '{:.0f}')} | {_f(l.get('epoch_s'), 1, '{:.2f}')}{mark(l)} | "
                     f"{_f(l.get('images_per_s'), 1, '{:,.0f}')} | {_f(l.get('util_mean_pct'), 1, '{:.0f}')} | "
                     f"{l.get('workers', '—')} | {_f(row.get('speedup'), 1, '{:.2f}')}× |")
        tc = ep.get("train_call", {}).get("result")
        if tc: L.append(f"\ntrain({tc['method']}, epochs=1): epoch {_f(tc.get('epoch_s'), 1, '{:.2f}')} s "
                        f"({tc.get('status')}, cold start included). * = stopped early by the time budget, extrapolated.")
    dec = S.get("decode", {})
    if dec:
        parts = []
        for k in ("source", "encoded_224"):
            r = dec.get(k, {})
            parts.append(f"{k}: CUDA {_f(r.get('cuda', {}).get('images_per_s'), 1, '{:,.0f}')}, "
                         f"CPU {_f(r.get('cpu', {}).get('images_per_s'), 1, '{:,.0f}')} images/s")
        di = dec.get("diskimages", {}).get("result", {})
        parts.append(f"DiskImages stream {_f(di.get('images_per_s'), 1, '{:,.0f}')} images/s on {di.get('device', '—')}")
        L += ["", "decode_jpeg — " + "; ".join(parts)]
    co = S.get("compile", {})
    if co:
        L.append(f"torch.compile ({co.get('config', {}).get('method')}, backend {co.get('config', {}).get('backend')}): "
                 f"eager {_f(co.get('eager', {}).get('step'), 1e3)} ms, compiled {_f(co.get('compiled', {}).get('step'), 1e3)} ms "
                 f"per step (×{_f(co.get('speedup'), 1, '{:.2f}')}); compiled call {_f(co.get('compiled', {}).get('call_s'), 1, '{:.0f}')} s")
    hs = S.get("host_sync", {})
    if hs:
        if hs.get("status") == "skipped": L.append(f"host sync in the step: skipped ({hs.get('reason', '')[:60]}...)")
        else:
            bad = {m: r.get("result", {}).get("step_first") for m, r in hs.get("methods", {}).items()
                   if r.get("result", {}).get("step_pass") is False}
            nb = sum(r.get("result", {}).get("batch_syncs", 0) for r in hs.get("methods", {}).values())
            L.append(f"host sync in the step: {'PASS' if hs.get('pass') else 'FAIL'} ({hs.get('methods_checked', 0)} methods "
                     f"checked)" + (f" {bad}" if bad else "")
                     + f"; make_batch syncs over all methods: {nb}")
    errs = [f"{s}" for s, v in S.items() if v.get("status") == "error"]
    if errs: L.append(f"sections with errors: {', '.join(errs)}")
    return "\n".join(L)


# ---------------------------------------------------------------------------------------------------------------------

def environment(device):
    import torchvision, ssl_workbench
    e = dict(torch=torch.__version__, torchvision=torchvision.__version__, python=platform.python_version(),
             ssl_workbench=getattr(ssl_workbench, "__version__", "?"), cpu_count=os.cpu_count(),
             torch_threads=torch.get_num_threads(), device=str(device), cudnn_benchmark=torch.backends.cudnn.benchmark,
             device_name=platform.processor() or platform.machine())
    try: import lightly; e["lightly"] = lightly.__version__
    except ImportError: e["lightly"] = None
    try: e["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                          timeout=5).stdout.strip() or None
    except Exception: e["git_commit"] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        e.update(device_name=p.name, capability=f"{p.major}.{p.minor}", total_memory_gib=p.total_memory / 2**30,
                 cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
        try: e["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                          capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except Exception: e["driver"] = None
    return e


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu_check.json", help="the JSON written (default: gpu_check.json)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (by default), to check every path in seconds")
    p.add_argument("--device", default=None, help="default: cuda when available (dry run: cpu)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--methods", default=None, help="comma-separated methods for step / host_sync (default: all)")
    p.add_argument("--epoch-methods", default=",".join(EPOCH_METHODS), help="methods timed over an epoch (default: nnclr,excb,dino)")
    p.add_argument("--backbone", default=None, help="default resnet18 (dry run: convnet)")
    p.add_argument("--preset", default=None, help="method preset for heads and queues (default cifar; dry run small)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's; dry run 1)")
    p.add_argument("--batch-size", type=int, default=None, help="step batch (default 256; dry run 8)")
    p.add_argument("--image-size", type=int, default=None, help="step image size (default 32; dry run 16)")
    p.add_argument("--steps", type=int, default=None, help="measured steps per bench (default 10; dry run 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps per bench (default 3; dry run 1)")
    p.add_argument("--data", default=None, help="image folder or .tar.gz with train/<class>/ for the epoch and decode "
                                                "(default: $SSL_WORKBENCH_CIFAR if set, not in a dry run; else the "
                                                "embedded cifar10_5k tiled)")
    p.add_argument("--epoch-images", type=int, default=None, help="images in the epoch (default 50000; dry run 64)")
    p.add_argument("--epoch-batch", type=int, default=None, help="epoch batch (default: --batch-size; dry run 16)")
    p.add_argument("--epoch-warmup", type=int, default=None, help="untimed steps before each epoch (default 5)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: min(16, CPUs); dry run 2)")
    p.add_argument("--jpegs", default=None, help="folder or tar of JPEGs to decode (default: --data, else the embedded archive)")
    p.add_argument("--decode-images", type=int, default=None, help="JPEGs read for decoding (default 4096; dry run 128)")
    p.add_argument("--decode-seconds", type=float, default=None, help="seconds per decode figure (default 3)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor; dry run eager)")
    p.add_argument("--sync-steps", type=int, default=None, help="monitored steps per method in host_sync (default 3)")
    p.add_argument("--sync-images", type=int, default=None, help="embedded images the host_sync runs hold (default 5000)")
    p.add_argument("--budget", type=float, default=None, help="seconds shared by the sections (default 420; dry run 100)")
    p.add_argument("--hard-limit", type=float, default=None, help="seconds after which the watchdog writes the JSON and "
                                                                   "exits, whatever runs (default: budget + 60)")
    p.add_argument("--table-from", default=None, metavar="JSON", help="only print the table of an earlier run's JSON")
    a = p.parse_args(argv)
    prof = DRY if a.dry_run else FULL
    for k, v in prof.items():
        if getattr(a, k) is None: setattr(a, k, v)
    if a.epoch_batch is None: a.epoch_batch = a.batch_size
    if a.workers is None: a.workers = min(16, os.cpu_count() or 1)
    if a.data is None and not a.dry_run: a.data = os.environ.get("SSL_WORKBENCH_CIFAR") or None
    if a.hard_limit is None: a.hard_limit = a.budget + 60
    from ssl_workbench.core import METHOD_NAMES, check_choice
    a.methods = list(METHOD_NAMES) if a.methods in (None, "all") else [m.strip() for m in a.methods.split(",") if m.strip()]
    a.epoch_methods = [m.strip() for m in a.epoch_methods.split(",") if m.strip()]
    for m in a.methods + a.epoch_methods: check_choice("method", m, METHOD_NAMES)
    a.sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    for s in a.sections: check_choice("section", s, SECTIONS)
    if a.device is None: a.device = "cpu" if a.dry_run else ("cuda" if torch.cuda.is_available() else "cpu")
    return a


def main(argv=None):
    a = parse_args(argv)
    if a.table_from:
        print(table(json.loads(Path(a.table_from).read_text()))); return 0
    from ssl_workbench.core import get_device
    device = get_device(a.device)
    if a.threads: torch.set_num_threads(a.threads)
    if device.type == "cuda" and device.index is not None: torch.cuda.set_device(device)
    args = {k: v for k, v in vars(a).items() if k != "table_from"}
    rep = Report(Path(a.out), dict(schema=1, started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                   finished=None, dry_run=a.dry_run, aborted=None, args=args, env=environment(device),
                                   sections={}))
    for s in SECTIONS:
        if s not in a.sections: rep.section(s).update(status="skipped", reason="not in --sections")
    rep.write()

    def abort(why, code):
        "Write the JSON with `why` and a table, print the table to the real stdout (a section may redirect sys.stdout), exit."
        with rep.lock: rep.data["aborted"] = why
        for attempt in range(3):   # the main thread may be adding to the dicts (a retry sees them settled)
            try:
                with rep.lock: rep.data["table_md"] = table(clean(rep.data))
                break
            except Exception as e:
                err = e; time.sleep(0.5)
        else:
            with rep.lock: rep.data["table_md"] = (f"GPU check — ABORTED: {why}; the table could not be built "
                                                   f"({type(err).__name__}: {err}); the JSON has every finished item")
        for attempt in range(3):
            try: rep.write(); break
            except Exception as e:
                print(f"gpu_check: could not write {rep.path} ({e}); the last item's version stays", file=sys.__stderr__)
                time.sleep(0.5)
        print(rep.data["table_md"], file=sys.__stdout__, flush=True)
        os._exit(code)
    watchdog = threading.Timer(a.hard_limit, abort, (f"hard limit of {a.hard_limit:g} s reached", 3))
    watchdog.daemon = True; watchdog.start()
    def on_signal(sig, frame):
        with rep.lock: rep.data["aborted"] = f"{signal.Signals(sig).name} received"
        rep.write(); raise SystemExit(128 + sig)
    for s in (signal.SIGTERM, signal.SIGINT): signal.signal(s, on_signal)

    sampler, why = UtilSampler.for_device(device)
    ctx = dict(sampler_source=why if sampler is None else sampler.source)
    budget = Budget(a.budget, [s for s in a.sections if s in SHARES])
    log(f"device {device} ({rep.data['env']['device_name']}), budget {a.budget:g} s, hard limit {a.hard_limit:g} s, "
        f"sections {','.join(a.sections)}{', DRY RUN' if a.dry_run else ''}")
    run = dict(step=lambda b: section_step(a, rep, b, device, sampler, ctx),
               host_sync=lambda b: section_host_sync(a, rep, b, device, ctx),
               decode=lambda b: section_decode(a, rep, b, device, ctx),
               epoch=lambda b: section_epoch(a, rep, b, device, sampler, ctx),
               compile=lambda b: section_compile(a, rep, b, device, sampler, ctx))
    try:
        for name in ("step", "host_sync", "decode", "epoch", "compile"):
            if name not in a.sections: continue
            sec = rep.section(name)
            share = budget.start(name)
            t = time.monotonic()
            log(f"section {name}: {share:.0f} s of the budget")
            try: run[name](budget)
            except Exception as e:
                rep.put(sec, "status", "error"); rep.put(sec, "error", short_error(e)); log(f"section {name}: {type(e).__name__}: {e}")
                if device.type == "cuda": torch.cuda.set_sync_debug_mode(0)
            free(device)
            rep.put(sec, "seconds", time.monotonic() - t)
            rep.write()
        if "gpu" in a.sections and "step" not in a.sections:
            rep.section("gpu").update(status="skipped", reason="measured inside the step section, which was not run")
    finally:
        watchdog.cancel()
        with rep.lock:
            rep.data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            rep.data["table_md"] = table(clean(rep.data))
        rep.write()
    print(rep.data["table_md"], flush=True)
    log(f"wrote {rep.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
