"""No host–device synchronisation inside a training step, for every method (issue: a GPU must never wait for the host).

On CPU a sync cannot be observed, so the step runs with the tensor operations that read device values on the host
patched to record their caller: `.item()`, `bool()`, `float()`, `int()`, `.tolist()`, `.cpu()`, `.numpy()`,
`.nonzero()` and indexing with a boolean mask (read or write; both call `nonzero`). `torch.bincount`,
`torch.unique`, `repeat_interleave` and `masked_select` size their output from the data and sync on CUDA: they are
recorded too, and so are `torch.tensor` / `torch.as_tensor` calls that name a device (on CUDA a host-to-device copy:
SimCLR's `torch.tensor(-inf, device=...)` was one, found by the GPU check on an H200). Three epochs, so that AdaSim bootstraps (window 1) and ExCB/DINO pass their epoch boundaries.
"""
import collections, traceback
import pytest, torch
from conftest import METHOD_TINY
from ssl_workbench.core import get_method_class, Progress
from ssl_workbench.train import resolve_configs, build_optimizer, train_step, make_batch, NumericGuard
from ssl_workbench.backbones import make_backbone
from ssl_workbench.augment import ViewMaker

TENSOR_READS = ('item', '__bool__', '__float__', '__int__', 'tolist', 'nonzero', 'cpu', 'numpy')
TORCH_SIZED = ('bincount', 'unique', 'repeat_interleave', 'masked_select')
HOST_COPIES = ('tensor', 'as_tensor')      # a tensor made from Python / numpy data: copied from the host

def _is_mask(idx):
    idx = idx if isinstance(idx, tuple) else (idx,)
    return any(torch.is_tensor(i) and i.dtype == torch.bool for i in idx)

@pytest.fixture
def host_reads(monkeypatch):
    "A recorder (Counter of (what, caller)) that counts only while `rec.active` is set."
    rec = collections.Counter(); rec.active = False
    def caller():
        fr = [f for f in traceback.extract_stack()[:-2] if 'ssl_workbench' in f.filename]
        return f"{fr[-1].filename.split('ssl_workbench')[-1]}:{fr[-1].lineno}" if fr else '?'
    def spy(name, orig, when=lambda *a, **k: True):
        def f(*a, **k):
            if rec.active and when(*a, **k): rec[(name, caller())] += 1
            return orig(*a, **k)
        return f
    for n in TENSOR_READS: monkeypatch.setattr(torch.Tensor, n, spy(n, getattr(torch.Tensor, n)))
    for n in TORCH_SIZED: monkeypatch.setattr(torch, n, spy(n, getattr(torch, n)))
    for n in HOST_COPIES: monkeypatch.setattr(torch, n, spy(n, getattr(torch, n), lambda d, *a, **k: 'device' in k))
    monkeypatch.setattr(torch.Tensor, '__getitem__', spy('mask index', torch.Tensor.__getitem__, lambda s, i: _is_mask(i)))
    monkeypatch.setattr(torch.Tensor, '__setitem__', spy('mask assign', torch.Tensor.__setitem__, lambda s, i, v: _is_mask(i)))
    return rec

STEP_TINY = {**METHOD_TINY, 'simclr': dict(proj_hidden=64, proj_dim=32)}

@pytest.mark.parametrize('name', list(STEP_TINY))
def test_training_step_reads_nothing_on_the_host(name, digits, host_reads):
    torch.manual_seed(0)
    tcfg, mcfg = resolve_configs(name, 'small', dataset='digits', batch_size=32, **STEP_TINY[name])
    model = get_method_class(name)(mcfg, make_backbone(tcfg.backbone, digits.image_size), batch_size=32, n_train=digits.n_train)
    vm = ViewMaker(model.view_specs(digits.image_size), digits.mean, digits.std)
    opt, g, cpu = build_optimizer(model.param_groups(tcfg.weight_decay), tcfg), torch.Generator().manual_seed(0), torch.device('cpu')
    model.setup(digits, vm, cpu); model.bind(digits, vm, g)
    guard = NumericGuard(model)
    spe = digits.n_train // 32
    prog = Progress(step=0, epoch=0, steps_per_epoch=spe, epochs=3)
    for epoch in range(3):
        prog.epoch = epoch
        for it in range(spe):
            batch = make_batch(digits, torch.arange(it * 32, (it + 1) * 32), vm, g, cpu)
            host_reads.active = True
            out = train_step(model, opt, batch, prog, tcfg, guard=guard)
            host_reads.active = False
            prog.step += 1
        model.on_epoch_end(prog)
        guard.check(prog.step)
    assert not host_reads, f"{name}: host reads inside the training step: {dict(host_reads)}"
    if name == 'adasim': assert 'nn/self_top1' in out.stats    # the last epochs ran with a filled cache (the bootstrapping path)
