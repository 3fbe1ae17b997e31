"Learning check on real CIFAR-10 images: AdaSim on DINO-2 learns, and bootstraps once its window is full."
import pytest, torch
from ssl_workbench.data import load_dataset, shared_cifar_path
from ssl_workbench.train import train

CIFAR = shared_cifar_path()
pytestmark = pytest.mark.skipif(CIFAR is None, reason='the shared CIFAR-10 tar is not available')

def test_adasim_dino2_learns_and_bootstraps(tmp_path):
    """DINO-2 + AdaSim, small CNN, 5,000 train / 2,000 test images, batch 64, 4 epochs, w = 1 so that bootstrapping
    may start in the second epoch: kNN top-1 (on the teacher) above initialisation, bootstrap/ratio > 0 after the
    window is full and 0 before."""
    torch.set_num_threads(2)
    data = load_dataset('folder', path=CIFAR, train_per_class=500, test_per_class=200)
    run = train('adasim', data=data, epochs=4, batch_size=64, window=1, topk=3, eval_every=4, progress=False,
                run_dir=tmp_path / 'adasim')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    ratios = [r['bootstrap/ratio'] for r in run.epochs[1:]]
    print(f"AdaSim (DINO-2) kNN: {init:.1f}% at init -> {final:.1f}%; bootstrap/ratio per epoch {[round(r, 4) for r in ratios]}; "
          f"nn/acc2 {run.last('nn/acc2'):.3f}; nn/self_top1 {run.last('nn/self_top1'):.3f}; z/std {run.last('z/std'):.4f}")
    assert ratios[0] == 0 and max(ratios[1:]) > 0
    assert final > init + 2.0
