"Learning check for All4One on real CIFAR-10 images (the shared tar, or $SSL_WORKBENCH_CIFAR); skipped without them."
import pytest, torch
from ssl_workbench.data import load_dataset, shared_cifar_path
from ssl_workbench.train import train

CIFAR = shared_cifar_path()
pytestmark = pytest.mark.skipif(CIFAR is None, reason='the shared CIFAR-10 tar is not available')

def test_all4one_lifts_knn_above_random_init(tmp_path):
    """All4One (`small` preset: convnet, all three objectives, momentum encoder, support set 1,024) on 5,000 images,
    batch 64, 5 epochs (390 steps): kNN top-1 on 2,000 test images clearly above initialisation, every loss term
    finite, the support set filled with real entries and no collapse. Budget: about 3 minutes on 2 idle cores."""
    torch.set_num_threads(2)
    data = load_dataset('folder', path=CIFAR, train_per_class=500, test_per_class=200)
    run = train('all4one', data=data, epochs=5, batch_size=64, eval_every=5, progress=False, run_dir=tmp_path / 'all4one')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"All4One kNN: {init:.1f}% at init -> {final:.1f}%; nn/acc {run.last('nn/acc'):.3f}; z/std {run.last('z/std'):.3f}; "
          f"terms nn {run.last('loss/nn'):.3f} centroid {run.last('loss/centroid'):.3f} redundancy {run.last('loss/redundancy'):.3f}")
    assert final > init + 3.0
    assert (run.method.queue.labels >= 0).all() and run.last('z/std') > 0.02
