import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault('NUMBA_CACHE_DIR', str(ROOT / '.numba_cache'))

@pytest.fixture(scope='session')
def digits():
    from ssl_workbench.data import load_dataset
    return load_dataset('digits', train_per_class=40)

# small, fast runs: 400 train images, 6 steps per epoch
TINY = dict(epochs=2, batch_size=64, progress=False, log_every=2, eval_every=1)
METHOD_TINY = {
    'nnclr': dict(queue_size=256),
    'dino': dict(),
    'excb': dict(),
    'all4one': dict(queue_size=128, proj_hidden=64, proj_dim=32, pred_hidden=64, ff_dim=64),
    'barlow': dict(proj_hidden=64, proj_dim=64),
    'simsiam': dict(),
    'adasim': dict(window=1, topk=3),      # bootstraps in the second epoch: resume covers a full window
    'jcl': dict(queue_size=256),
    'mocov2': dict(queue_size=256),
}
