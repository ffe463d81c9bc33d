"""Every file path, module name and link anchor the documentation names exists.

Documents: README.md, docs/*.md and every README.md under charts/, e2e/ and serving_runtime/.
What counts as a repository path:
- in `inline code` outside code blocks: a token whose first component is a top-level
  directory of the repository (`serving_runtime/server/app.py`, `e2e/cluster/up`,
  `tests/operator/`), or any `dir/file.ext` (resolved from the repository root, the
  document's folder or a folder above it: `runtimes/xgboost/direct.py` in
  serving_runtime/models/trees/README.md);
- in fenced code blocks: only tokens that start with a top-level directory (commands such as
  `images/build.sh`), since examples also name files of a user's own working directory;
- Markdown link targets, relative to the document (as GitHub resolves them), with their
  `#anchor` checked against the target's headings.
Ignored: URLs, absolute paths, globs (`*`), placeholders (`<name>`, `{a,b}`, `NAME`-style
words without an extension), and files the tools create at run time (`e2e/.state/`, ...).

Dotted module names (`serving_runtime.server.app`, `mlmodel_operator.spec`) anywhere in a
document must be a module or package file; one trailing component may be a name defined at
the top of that module (`serving_runtime.save_model`), read with `ast`, never imported.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

TOP_LEVEL = ("serving_runtime", "operator", "crds", "charts", "e2e", "tests", "docs",
             "scripts", "bench", "examples", "images", ".ci")
# Created by the tools at run time, git-ignored: named in docs, never committed.
GENERATED = ("e2e/.state/", "images/.wheels/", ".venv/")
PACKAGES = {"serving_runtime": REPO_ROOT / "serving_runtime",
            "mlmodel_operator": REPO_ROOT / "operator" / "mlmodel_operator"}

FENCE = re.compile(r"^ {0,3}(```|~~~)[^\n]*\n.*?^ {0,3}\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.S)
LINK = re.compile(r"!?\[(?:[^\]\n]|\][^(\n])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MODULE = re.compile(r"(?<![\w./-])(serving_runtime|mlmodel_operator)((?:\.[A-Za-z_]\w*)+)")
PATH_TOKEN = re.compile(r"^[\w.-]+(?:/[\w.-]+)*/?$")
EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,7}$")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def documents() -> list[Path]:
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")),
            REPO_ROOT / "bench" / "README.md", REPO_ROOT / "operator" / "RBAC.md"]
    for top in ("charts", "e2e", "serving_runtime"):
        docs += sorted(p for p in (REPO_ROOT / top).rglob("README.md")
                       if ".state" not in p.parts and "node_modules" not in p.parts)
    return docs


def split_code(text: str) -> tuple[str, list[str]]:
    """The prose (code blocks blanked out) and the code blocks' contents."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    return FENCE.sub("", text), blocks


def tokens(span: str) -> list[str]:
    out = []
    for raw in re.split(r"[\s,;]+", span):
        tok = raw.strip("'\"").rstrip(".:)")
        if tok:
            out.append(tok)
    return out


def is_path_token(tok: str, *, in_code: bool) -> bool:
    if "://" in tok or tok.startswith(("/", "-", "~", "../", "./")) or not PATH_TOKEN.match(tok):
        return False  # URLs, absolute and cwd-relative paths, placeholders, globs, options
    if tok.startswith(GENERATED) or tok in {g.rstrip("/") for g in GENERATED}:
        return False
    first = tok.split("/", 1)[0]
    if first in TOP_LEVEL:
        return "/" in tok or in_code is False and tok.endswith("/")
    if in_code or "/" not in tok:
        return False
    if "." in first or first.startswith("."):
        return False  # a domain (`node-role.example.com/x`) or a hidden tool folder
    return bool(EXTENSION.search(tok.rstrip("/")))


def resolves(tok: str, doc: Path) -> bool:
    rel = tok.rstrip("/")
    if tok.split("/", 1)[0] in TOP_LEVEL:
        return (REPO_ROOT / rel).exists()
    folder = doc.parent
    while True:
        if (folder / rel).exists():
            return True
        if folder == REPO_ROOT:
            return False
        folder = folder.parent


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # link text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(text: str) -> frozenset[str]:
    prose, _ = split_code(text)
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(prose):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


@cache
def anchors(md: Path) -> frozenset[str]:
    return anchors_of(md.read_text(encoding="utf-8"))


@cache
def top_level_names(module: Path) -> frozenset[str]:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names: set[str] = set()
    body = list(tree.body)
    for node in tree.body:  # `if TYPE_CHECKING:` imports name a module's lazy exports
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            body += node.body
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return frozenset(names)


def module_exists(dotted: str) -> bool:
    top, *parts = dotted.split(".")
    here = PACKAGES[top]
    for i, part in enumerate(parts):
        if (here / part / "__init__.py").exists():
            here = here / part
            continue
        if (here / f"{part}.py").exists():
            rest = parts[i + 1:]
            return not rest or rest[0] in top_level_names(here / f"{part}.py")
        # not a submodule: a name defined by the package, and nothing after it
        return part in top_level_names(here / "__init__.py")
    return True


def problems_in(doc: Path, text: str | None = None) -> list[str]:
    """What `doc` (or `text`, read as if it were `doc`) names that does not exist."""
    if text is None:
        text = doc.read_text(encoding="utf-8")
    prose, blocks = split_code(text)
    name = doc.relative_to(REPO_ROOT).as_posix()
    out: list[str] = []
    spans = [m.group(2) for m in INLINE_CODE.finditer(prose)]
    for span in spans:
        for tok in tokens(span):
            if is_path_token(tok, in_code=False) and not resolves(tok, doc):
                out.append(f"{name}: `{tok}` does not exist")
    for block in blocks:
        for tok in tokens(block):
            if is_path_token(tok, in_code=True) and not resolves(tok, doc):
                out.append(f"{name}: `{tok}` (in a code block) does not exist")
    for m in LINK.finditer(INLINE_CODE.sub("", prose)):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto:, ...
        file_part, _, anchor = target.partition("#")
        if not file_part:
            if anchor not in anchors_of(text):
                out.append(f"{name}: link ({target}) names a missing heading #{anchor}")
            continue
        dest = (doc.parent / file_part).resolve()
        if not dest.exists():
            out.append(f"{name}: link ({target}) points at a missing file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            out.append(f"{name}: link ({target}) names a missing heading #{anchor}")
    for m in MODULE.finditer(text):
        dotted = m.group(1) + m.group(2)
        if not module_exists(dotted):
            out.append(f"{name}: module `{dotted}` does not exist")
    return sorted(set(out))


def test_the_documents_are_found():
    names = {d.relative_to(REPO_ROOT).as_posix() for d in documents()}
    assert {"README.md", "docs/architecture.md", "docs/contracts.md",
            "charts/mlmodel-operator/README.md", "e2e/cluster/README.md"} <= names


def test_every_path_module_and_anchor_named_in_the_docs_exists():
    problems = [p for doc in documents() for p in problems_in(doc)]
    assert not problems, "documentation names things that do not exist:\n" + "\n".join(problems)


def test_the_checker_catches_what_it_should():
    text = (
        "See `serving_runtime/fastpath/asgi.py`, `serving_runtime.fastpath`, "
        "`serving_runtime.save_model`, `serving_runtime/server/app.py`, `https://x.io/a.py`,\n"
        "`tests/runtime/test_*.py`, `<MODELS_DIR>/<name>/metadata.json`, `e2e/.state/env`,\n"
        "`runtimes/xgboost/direct.py`, [bad](nowhere.md), [ok](#probe), [no](#nope).\n\n"
        "# Probe\n\n```sh\nimages/no-such-step.sh\nlegacy/rf10/model.joblib\n```\n"
    )
    found = "\n".join(problems_in(REPO_ROOT / "serving_runtime" / "models" / "probe.md", text))
    for missing in ("serving_runtime/fastpath/asgi.py", "module `serving_runtime.fastpath`",
                    "images/no-such-step.sh", "nowhere.md", "#nope"):
        assert missing in found, missing
    for fine in ("save_model", "server/app.py", "x.io", "test_*", "MODELS_DIR", ".state",
                 "xgboost_direct", "legacy/rf10", "#probe"):
        assert fine not in found, fine
