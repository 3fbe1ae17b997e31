"""Build the embedded default dataset `data/cifar10-5k.tar.gz` from a full CIFAR-10 JPEG archive.

Usage: python scripts/build_cifar10_5k.py SOURCE.tar.gz [--out data/cifar10-5k.tar.gz]

SOURCE holds train/<class>/<name>.jpg and test/<class>/<name>.jpg (CIFAR-10 as JPEG). The subset takes, for each
class, the first 500 train and the first 200 test images by file name, copies their bytes unchanged (no re-encoding)
and writes them in sorted order with fixed metadata, so the output is byte-for-byte reproducible: its SHA-256 is
checked against `data/cifar10-5k.sha256`.
"""
import argparse, gzip, hashlib, io, sys, tarfile
from pathlib import Path

PER_SPLIT = {'train': 500, 'test': 200}

def build(src, out):
    files = {}
    with tarfile.open(src, 'r:*') as tf:
        for m in tf:
            parts = m.name.strip('/').split('/')
            if m.isfile() and len(parts) == 3 and parts[0] in PER_SPLIT and parts[2].lower().endswith(('.jpg', '.jpeg')):
                files.setdefault((parts[0], parts[1]), []).append((parts[2], tf.extractfile(m).read()))
    if not files: sys.exit(f"no train/<class>/*.jpg or test/<class>/*.jpg in {src}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w', format=tarfile.USTAR_FORMAT) as tf:
        def add(name, data=None):
            ti = tarfile.TarInfo(name); ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, '', ''
            if data is None: ti.type, ti.mode = tarfile.DIRTYPE, 0o755; tf.addfile(ti)
            else: ti.size, ti.mode = len(data), 0o644; tf.addfile(ti, io.BytesIO(data))
        for split in sorted(PER_SPLIT):
            add(split + '/')
            for (s, cls) in sorted(k for k in files if k[0] == split):
                items = sorted(files[(s, cls)])[:PER_SPLIT[split]]
                if len(items) < PER_SPLIT[split]: sys.exit(f"{split}/{cls} has only {len(items)} images")
                add(f"{split}/{cls}/")
                for name, data in items: add(f"{split}/{cls}/{name}", data)
    raw = buf.getvalue()
    out = Path(out); out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, 'wb') as f, gzip.GzipFile(filename='', mode='wb', fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return hashlib.sha256(out.read_bytes()).hexdigest()

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('source'); p.add_argument('--out', default='data/cifar10-5k.tar.gz')
    a = p.parse_args()
    digest = build(a.source, a.out)
    ref = Path(a.out).with_suffix('').with_suffix('.sha256')
    print(f"{a.out}: sha256 {digest}")
    if ref.exists():
        want = ref.read_text().split()[0]
        print('matches the recorded checksum' if want == digest else f"DIFFERS from the recorded checksum {want}")
        sys.exit(0 if want == digest else 1)
    ref.write_text(f"{digest}  {Path(a.out).name}\n"); print(f"recorded in {ref}")
