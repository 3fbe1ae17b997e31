"""Learning checks on real images: the embedded CIFAR-10 subset (5,000 train / 2,000 test, 32×32), small CNN, CPU.
Each has a budget of a few minutes on 2 cores; the thresholds sit below what was measured (printed by each test).
Marked `slow`: `make test-slow` runs them (CI does, after `make test`), so that `make test` stays under 30 minutes."""
import math, pytest, torch
from ssl_workbench.data import load_dataset
from ssl_workbench.train import train

pytestmark = pytest.mark.slow

@pytest.fixture(scope='module')
def cifar():
    torch.set_num_threads(2)
    return load_dataset('cifar10_5k')

def test_excb_learns_and_keeps_clusters_balanced(tmp_path, cifar):
    """ExCB's `small` preset (K = 256, batch 64, 5 epochs = 390 steps): the teacher's kNN top-1 on 2,000 test images
    clearly above initialisation (measured 29.4% -> 34.1%, student 35.9%), no empty cluster, sizes near 1."""
    run = train('excb', data=cifar, eval_every=5, progress=False, run_dir=tmp_path / 'excb')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"ExCB kNN: {init:.1f}% at init -> {final:.1f}% (student {run.last('knn/student_top1'):.1f}%); empty clusters "
          f"{run.last('clusters/empty')}; relative sizes {run.last('clusters/min_rel'):.2f}..{run.last('clusters/max_rel'):.2f}")
    assert final > init + 3.0 and run.last('knn/student_top1') > init + 3.0
    assert run.last('clusters/empty') == 0 and 0.5 < run.last('clusters/min_rel') <= run.last('clusters/max_rel') < 2.0

def test_dino2_teacher_leaves_uniform_and_learns(tmp_path, cifar):
    """DINO-2's `small` preset (K = 256, BN in the head, batch 64, 5 epochs = 390 steps): the teacher's output is not
    uniform and its kNN top-1 rises. Measured on seed 0: 29.4% -> 33.25% (student 34.25%), teacher entropy 5.28 of
    log K = 5.545, confidence 0.030 (1/K = 0.0039). Without BN in the head the same run ended at 31.25% with entropy
    5.54 and confidence 0.0044, which fails here (see the DINO notebook). Budget: about 5.5 minutes on 2 cores."""
    run = train('dino', data=cifar, eval_every=1, progress=False, run_dir=tmp_path / 'dino')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    ent, conf = run.epochs[-1]['dino/entropy'], run.epochs[-1]['clusters/confidence']
    print(f"DINO-2 kNN: {init:.1f}% at init -> {final:.1f}% (student {run.last('knn/student_top1'):.1f}%); teacher entropy "
          f"{ent:.3f} of {math.log(256):.3f}, confidence {conf:.4f}; empty clusters {run.last('clusters/empty')}")
    assert final > init + 2.0
    assert ent < math.log(256) - 0.1 and conf > 4 / 256

def test_nnclr_lifts_knn_above_random_init(tmp_path, cifar):
    """NNCLR with the small CNN on 5,000 images, batch 64, 10 epochs (780 steps): kNN clearly above initialisation.
    NNCLR is flat for its first ~150 steps (the randomly initialised predictor must align first), so the check needs
    this many steps; see the NNCLR notebook."""
    run = train('nnclr', data=cifar, epochs=10, batch_size=64, queue_size=4096, eval_every=10, progress=False,
                run_dir=tmp_path / 'nnclr')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"NNCLR kNN: {init:.1f}% at init -> {final:.1f}%; nn/acc {run.last('nn/acc'):.3f}")
    assert final > init + 4.0

def test_all4one_lifts_knn_above_random_init(tmp_path, cifar):
    """All4One (`small` preset: convnet, all three objectives, momentum encoder, support set 1,024) on 5,000 images,
    batch 64, 10 epochs (780 steps): kNN top-1 on 2,000 test images clearly above initialisation, every loss term
    finite, the support set filled with real entries and no collapse. Like NNCLR it is flat for its first ~150 steps while
    its predictors align (measured: 29.4% -> 29.8 / 31.7 / 33.8 / 34.5 / 34.3% at epochs 2..10). Budget: about 4 minutes on 2 cores."""
    run = train('all4one', data=cifar, epochs=10, batch_size=64, eval_every=10, progress=False, run_dir=tmp_path / 'all4one')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"All4One kNN: {init:.1f}% at init -> {final:.1f}%; nn/acc {run.last('nn/acc'):.3f}; z/std {run.last('z/std'):.3f}; "
          f"terms nn {run.last('loss/nn'):.3f} centroid {run.last('loss/centroid'):.3f} redundancy {run.last('loss/redundancy'):.3f}")
    assert final > init + 3.0
    assert (run.method.queue.labels >= 0).all() and run.last('z/std') > 0.02

def test_adasim_dino2_learns_and_bootstraps(tmp_path, cifar):
    """DINO-2 + AdaSim (`small` preset, w = 1 so that bootstrapping may start in the second epoch), batch 64, 5 epochs:
    no bootstrapping before the window is full, some after; kNN (teacher) above initialisation; no dimensional
    collapse. Measured 29.4% -> 32.7%, ratio 0, 0, 0.0006, 0.0034, 0.0074 (with DINO's `small` head without BN:
    30.8%, ratio up to 0.010). Its base alone reaches 33.25% at this budget, and AdaSim acts on under 1% of the
    images: the check guards the mechanism, not a gain over the base."""
    run = train('adasim', data=cifar, epochs=5, batch_size=64, window=1, topk=3, eval_every=5, progress=False,
                run_dir=tmp_path / 'adasim')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    ratios = [r['bootstrap/ratio'] for r in run.epochs[1:]]
    print(f"AdaSim (DINO-2) kNN: {init:.1f}% at init -> {final:.1f}%; bootstrap/ratio per epoch {[round(r, 4) for r in ratios]}; "
          f"nn/acc2 {run.last('nn/acc2'):.3f}; nn/self_top1 {run.last('nn/self_top1'):.3f}; z/std {run.last('z/std'):.4f}")
    assert ratios[0] == 0 and max(ratios[1:]) > 0
    assert final > init + 1.0 and run.last('z/std') > 0.02

def test_simclr_reference(tmp_path, cifar):
    """SimCLR's `small` preset (batch 256, SGD lr 0.12, wd 5e-4, 10 epochs = 190 steps): the reference a harness must
    reproduce; a bare training loop with this recipe reached 40.2% from 29.4% on these images."""
    run = train('simclr', data=cifar, eval_every=10, progress=False, run_dir=tmp_path / 'simclr')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"SimCLR kNN: {init:.1f}% at init -> {final:.1f}%; contrastive/acc1 {run.last('contrastive/acc1'):.3f}")
    assert final > init + 5.0

def test_jcl_lifts_knn_above_random_init(tmp_path, cifar):
    """JCL (small preset: 7-layer CNN, M' = 4, λ = 2 ramped, split-batch BN) on 5,000 images, batch 64, 3 epochs
    (234 steps): kNN top-1 on 2,000 test images clearly above initialisation and no collapse. Measured 29.4% -> 36.9%
    (MoCo v2 at the same budget: 33.6%; see the JCL notebook)."""
    run = train('jcl', data=cifar, epochs=3, batch_size=64, eval_every=3, progress=False, device='cpu',
                run_dir=tmp_path / 'jcl')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"JCL kNN: {init:.1f}% at init -> {final:.1f}%; contrastive/acc1 {run.last('contrastive/acc1'):.3f}, "
          f"z/std {run.last('z/std'):.3f}, loss/jcl {run.last('loss/jcl'):.3f}")
    assert final > init + 4.0
    assert run.last('loss/jcl') > 0 and run.last('z/std') > 0.02

def test_simsiam_learns(tmp_path, cifar):
    """SimSiam's `small` preset (batch 128, 20 epochs = 780 steps, the released code's MoCo v2 augmentation): kNN top-1
    clearly above initialisation, no collapse. Measured on seed 0: 29.4% -> 36.85% (seeds 1, 2: +3.2, +4.55), z/std
    0.041; with solo-learn's CIFAR crops (down to 8%) the same run ended at 30.95% and fails here (see the SimSiam
    notebook). The kNN dips below initialisation for about 9 epochs first, so a shorter run cannot show it (10 epochs:
    +2.85). Measured here 36.8% with eval_every=20, in 432 s: the longest learning check."""
    run = train('simsiam', data=cifar, eval_every=20, progress=False, run_dir=tmp_path / 'simsiam')
    init, final = run.epochs[0]['knn/top1'], run.last('knn/top1')
    print(f"SimSiam kNN: {init:.1f}% at init -> {final:.1f}%; online {run.last('online/top1'):.1f}%; z/std {run.last('z/std'):.4f}")
    assert final > init + 4.0 and run.last('z/std') > 0.03
