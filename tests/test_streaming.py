"Datasets larger than memory stream from disk: the same pixels, views and losses as the resident path; clear errors."
import json, shutil
import numpy as np, pytest, torch
from PIL import Image
from ssl_workbench.data import load_dataset, DiskImages, place
from ssl_workbench.train import train, make_batch, build_run, resolve_run
from ssl_workbench.core import ConfigError

CLASSES = 4

def numbers(history):
    "History without wall-clock timings."
    return [{k: v for k, v in r.items() if not k.startswith('time/')} for r in history]

@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    """An ImageNet-style tree of 200 JPEGs from the embedded CIFAR-10 subset: train/<class>/ (40 each) and val/<class>/
    (10 each) for 4 classes, plus a few larger non-square ones that need resizing in a second tree."""
    base = tmp_path_factory.mktemp('stream')
    emb = load_dataset(train_per_class=40, test_per_class=10)
    for split, x, y in (('train', emb.train_x, emb.train_y), ('val', emb.test_x, emb.test_y)):
        for j, (img, c) in enumerate(zip(x, y.tolist())):
            if c >= CLASSES: continue
            d = base / 'tree' / split / emb.classes[c]; d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f'{j:05d}.jpg', quality=90)
    mixed = base / 'mixed'
    shutil.copytree(base / 'tree', mixed)
    for j, f in enumerate(sorted((mixed / 'train' / 'bird').iterdir())[:8]):  # 48×40 and greyscale ones
        im = Image.open(f).resize((48, 40))
        (im.convert('L') if j % 2 else im).save(f, quality=85)
    return base

def test_same_pixels_resident_and_streamed(folder, tmp_path):
    plain = load_dataset('folder', folder / 'tree', root=tmp_path)
    for tree, size in (('tree', None), ('mixed', 24)):
        res = load_dataset('folder', folder / tree, root=tmp_path, image_size=size)
        st = load_dataset('folder', folder / tree, root=tmp_path, image_size=size, memory_budget=1, workers=2)
        assert not res.streamed and st.streamed and isinstance(st.train_x, DiskImages)
        assert (st.n_train, len(st.test_x), st.classes) == (160, 40, res.classes) == (res.n_train, len(res.test_x), res.classes)
        assert torch.equal(st.train_y, res.train_y) and torch.equal(st.test_y, res.test_y)
        assert st.mean == res.mean and st.std == res.std    # the 2,048-image sample is every image here
        idx = torch.randperm(160, generator=torch.Generator().manual_seed(0))[:64]
        assert torch.equal(st.train_x[idx], res.train_x[idx])
        assert torch.equal(st.train_x[:], res.train_x) and torch.equal(st.test_x[:], res.test_x)
    # the resident path is unchanged by the budget: a generous one decodes and caches as before
    big = load_dataset('folder', folder / 'tree', root=tmp_path, memory_budget='1GB')
    assert not big.streamed and torch.equal(big.train_x, plain.train_x)

def test_same_views_and_losses_when_training(folder, tmp_path):
    "nnclr and excb (k-means init reads train_x) on the streamed folder give the resident run's numbers exactly."
    res = load_dataset('folder', folder / 'tree', root=tmp_path)
    kw = dict(backbone='convnet', epochs=1, batch_size=32, progress=False, log_every=1, eval_every=1, seed=3)
    # the views of one batch, made by the trainer's make_batch from either source with the same generator
    M, preset, tcfg, mcfg, _, _ = resolve_run('nnclr', overrides=dict(kw, dataset='folder', data_path=str(folder / 'tree'),
                                                                       memory_budget='1B', queue_size=64))
    run = build_run(M, preset, tcfg, mcfg, tmp_path / 'unused')
    assert run.data.streamed
    idx = torch.tensor([5, 150, 77, 0, 31, 99])
    a, b = (make_batch(d, idx, run.view_maker, torch.Generator().manual_seed(1), torch.device('cpu')) for d in (run.data, res))
    assert all(torch.equal(u, v) for u, v in zip(a['views'], b['views'])) and torch.equal(a['images'], b['images'])
    for method, extra in (('nnclr', dict(queue_size=64)), ('excb', {})):
        streamed = train(method, dataset='folder', data_path=str(folder / 'tree'), memory_budget='1B',
                         run_dir=tmp_path / f'{method}-s', **kw, **extra)
        resident = train(method, data=res, run_dir=tmp_path / f'{method}-r', **kw, **extra)
        assert streamed.data.streamed and not resident.data.streamed
        assert len(streamed.steps) == 5 and numbers(streamed.history) == numbers(resident.history), method
        x = streamed.data.train_x
        assert x.served['ahead'] >= 5, x.served        # every training batch came from the read-ahead queue
        assert json.loads((tmp_path / f'{method}-s' / 'config.json').read_text())['train']['memory_budget'] == '1B'

def test_damaged_files_are_named(folder, tmp_path):
    bad = tmp_path / 'bad'; shutil.copytree(folder / 'tree', bad)
    f = sorted((bad / 'train' / 'cat').iterdir())[3]
    f.write_bytes(f.read_bytes()[:200])   # a truncated JPEG: found while sampling the statistics at load
    with pytest.raises(ValueError, match=f'cannot decode the image train/cat/{f.name} in {bad}'):
        load_dataset('folder', bad, root=tmp_path, memory_budget=1)
    with pytest.raises(ValueError, match=f'train/cat/{f.name}'):                    # the resident path says the same
        load_dataset('folder', bad, root=tmp_path)
    shutil.copy(sorted((bad / 'train' / 'bird').iterdir())[0], f)
    g = sorted((bad / 'val' / 'bird').iterdir())[2]
    g.write_bytes(b'not a jpeg at all')  # in val/: met when a batch holding it is read, next to good JPEGs
    st = load_dataset('folder', bad, root=tmp_path, memory_budget=1)
    st.test_x[:5]
    with pytest.raises(ValueError, match=f'val/bird/{g.name} in .*damaged or not an image'):
        st.test_x[:]
    h = sorted((bad / 'val' / 'cat').iterdir())[0]
    h.write_bytes((folder / 'tree' / 'val' / 'cat' / h.name).read_bytes()[:-300])  # JPEG cut short
    g.write_bytes((folder / 'tree' / 'val' / 'bird' / g.name).read_bytes())
    with pytest.raises(ValueError, match=f'val/cat/{h.name}'):
        st.test_x[torch.arange(40)]
    h.unlink()   # a file removed after the listing
    with pytest.raises(FileNotFoundError, match=f'val/cat/{h.name}.*load the dataset again'):
        st.test_x[st.test_x.files.index(str(h))]

def test_bad_input(folder, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing'):
        load_dataset('folder', tmp_path / 'missing', memory_budget=1)
    for bad in ('lots', '8 GBs', -1):
        with pytest.raises(ValueError, match="memory_budget=.*not allowed.*'8GB'"):
            load_dataset('folder', folder / 'tree', root=tmp_path, memory_budget=bad)
    with pytest.raises(ConfigError, match="'8GB'"):
        train('nnclr', dataset='folder', data_path=str(folder / 'tree'), memory_budget='lots', run_dir=tmp_path / 'r')
    with pytest.raises(ValueError, match='workers must be a positive int'):
        load_dataset('folder', folder / 'tree', root=tmp_path, memory_budget=1, workers=0)
    st = load_dataset('folder', folder / 'tree', root=tmp_path, memory_budget=1)
    with pytest.raises(IndexError, match='out of range for 160 images'): st.train_x[torch.tensor([0, 160])]
    with pytest.raises(TypeError, match='indexed by image'): st.train_x[:, 0]

def test_unusual_files_decode_like_the_resident_path(tmp_path):
    "CMYK and EXIF-rotated JPEGs, greyscale JPEG, palette GIF: the streamed pixels equal the resident ones (PIL's)."
    rng = np.random.default_rng(0)
    for s in ('train', 'val'):
        for c in ('a', 'b'):
            d = tmp_path / 'odd' / s / c; d.mkdir(parents=True)
            im = Image.fromarray(rng.integers(0, 256, (20, 14, 3), dtype=np.uint8))
            exif = Image.Exif(); exif[0x0112] = 6                  # "rotate 90° clockwise to display"
            im.convert('CMYK').save(d / '0.jpg'); im.save(d / '1.jpg', exif=exif)
            im.convert('L').save(d / '2.jpg'); im.save(d / '3.jpg'); im.convert('P').save(d / '4.gif')
    res = load_dataset('folder', tmp_path / 'odd', root=tmp_path, image_size=12)
    st = load_dataset('folder', tmp_path / 'odd', root=tmp_path, image_size=12, memory_budget=1)
    assert st.streamed and torch.equal(st.train_x[:], res.train_x) and torch.equal(st.test_x[torch.arange(10)], res.test_x)
    from PIL import ImageOps
    from ssl_workbench.folders import _pil_square
    f = tmp_path / 'odd' / 'train' / 'a' / '1.jpg'
    upright, raw = (torch.from_numpy(np.array(_pil_square(g(Image.open(f)).convert('RGB'), 12))).permute(2, 0, 1)
                    for g in (ImageOps.exif_transpose, lambda im: im))
    assert torch.equal(st.train_x[1], upright) and not torch.equal(st.train_x[1], raw)  # the EXIF rotation is applied
