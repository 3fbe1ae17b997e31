"Learning checks on real CIFAR-10 images (../shared/data/cifar10-jpeg.tar.gz, or $SSL_WORKBENCH_CIFAR)."
import pytest, torch
from ssl_workbench.data import load_dataset, shared_cifar_path
from ssl_workbench.train import train

CIFAR = shared_cifar_path()
pytestmark = pytest.mark.skipif(CIFAR is None, reason='the shared CIFAR-10 tar is not available')

@pytest.fixture(scope='module')
def cifar():
    return load_dataset('folder', path=CIFAR, train_per_class=300, test_per_class=100)

def test_nnclr_lifts_knn_above_random_init(tmp_path, cifar):
    "NNCLR with the small CNN: kNN top-1 on 1,000 test images clearly above the same backbone at initialisation."
    run = train('nnclr', data=cifar, epochs=6, batch_size=64, queue_size=2048, eval_every=6, progress=False,
                run_dir=tmp_path / 'nnclr')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"NNCLR kNN: {init:.1f}% at init -> {final:.1f}%")
    assert final > init + 4.0
