"""Edit a Python source file in place of a hand edit: splice new text into the spans of AST nodes.

Everything not edited (comments, layout, other settings) stays byte-for-byte as it was,
so a patched XTuner config reads like the stock one with a few values changed.
Every lookup raises `PatchError` when the node it needs is not there: a patch never
becomes a silent no-op.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from xtflow.errors import XtflowError


class PatchError(XtflowError):
    """The source does not have the setting that was to be patched."""


@dataclass
class SourceEditor:
    """Collects edits on `source` (given by AST node spans) and applies them at once."""

    source: str
    origin: str = "<source>"
    tree: ast.Module = field(init=False)
    _raw: bytes = field(init=False)
    _line_starts: list[int] = field(init=False)
    _edits: list[tuple[int, int, str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.tree = ast.parse(self.source, filename=self.origin)
        # AST column offsets count UTF-8 bytes, so work on bytes.
        self._raw = self.source.encode("utf-8")
        self._line_starts = [0]
        for line in self._raw.splitlines(keepends=True):
            self._line_starts.append(self._line_starts[-1] + len(line))

    # -- locating nodes -----------------------------------------------------------
    def _offset(self, lineno: int, col: int) -> int:
        return self._line_starts[lineno - 1] + col

    def span(self, node: ast.AST) -> tuple[int, int]:
        return (
            self._offset(node.lineno, node.col_offset),  # type: ignore[attr-defined]
            self._offset(node.end_lineno, node.end_col_offset),  # type: ignore[attr-defined]
        )

    def text(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self._raw[start:end].decode("utf-8")

    def assignment(self, name: str) -> ast.Assign:
        """The one module-level `name = ...` statement."""
        found = [
            node
            for node in self.tree.body
            if isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == name
        ]
        if not found:
            raise PatchError(f"{self.origin}: has no top-level setting '{name}' to patch")
        if len(found) > 1:
            raise PatchError(
                f"{self.origin}: sets '{name}' {len(found)} times at top level; cannot patch it unambiguously"
            )
        return found[0]

    def dict_call(self, node: ast.AST, where: str) -> ast.Call:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict"):
            raise PatchError(f"{self.origin}: '{where}' is not a dict(...) to patch")
        return node

    def keyword(self, call: ast.Call, key: str, where: str) -> ast.keyword:
        for kw in call.keywords:
            if kw.arg == key:
                return kw
        raise PatchError(f"{self.origin}: '{where}' has no '{key}' to patch")

    def has_keyword(self, call: ast.Call, key: str) -> bool:
        return any(kw.arg == key for kw in call.keywords)

    def dict_path(self, var: str, *keys: str) -> ast.Call:
        """The dict(...) at `var.keys[0].keys[1]...` (e.g. model.llm)."""
        node: ast.AST = self.assignment(var).value
        where = var
        call = self.dict_call(node, where)
        for key in keys:
            node = self.keyword(call, key, where).value
            where = f"{where}.{key}"
            call = self.dict_call(node, where)
        return call

    # -- edits --------------------------------------------------------------------
    def replace(self, node: ast.AST, code: str) -> None:
        start, end = self.span(node)
        self._edits.append((start, end, code))

    def set_assignment(self, name: str, code: str) -> None:
        self.replace(self.assignment(name).value, code)

    def set_keyword(self, call: ast.Call, key: str, code: str, where: str) -> None:
        self.replace(self.keyword(call, key, where).value, code)

    def add_keyword(self, call: ast.Call, key: str, code: str, where: str) -> None:
        """Add `key=code` to a dict(...) call that lacks it; replace it if present."""
        if self.has_keyword(call, key):
            self.set_keyword(call, key, code, where)
            return
        items: list[ast.AST] = [*call.args, *call.keywords]
        if items:
            _, end = self.span(max(items, key=lambda n: self.span(n)[1]))
            self._edits.append((end, end, f", {key}={code}"))
        else:
            start, end = self.span(call)
            self._edits.append((start, end, f"dict({key}={code})"))

    def remove_keywords(self, call: ast.Call, keys: list[str], where: str) -> None:
        """Remove `key=...` items (each must exist) from a dict(...) call, commas included."""
        doomed = [self.keyword(call, key, where) for key in keys]
        items = sorted([*call.args, *call.keywords], key=lambda n: self.span(n)[0])
        i = 0
        while i < len(items):
            if items[i] not in doomed:
                i += 1
                continue
            j = i
            while j + 1 < len(items) and items[j + 1] in doomed:
                j += 1
            start, end = self.span(items[i])[0], self.span(items[j])[1]
            if j + 1 < len(items):  # a kept item follows: cut up to it
                end = self.span(items[j + 1])[0]
            elif i > 0:  # the run ends the call: cut from the kept item before it
                start = self.span(items[i - 1])[1]
            self._edits.append((start, end, ""))
            i = j + 1

    def insert_after_imports(self, code: str) -> None:
        imports = [n for n in self.tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if not imports:
            raise PatchError(f"{self.origin}: has no import statements; not an XTuner config")
        _, end = self.span(imports[-1])
        self._edits.append((end, end, "\n" + code.rstrip("\n")))

    def insert_before(self, node: ast.stmt, code: str) -> None:
        start = self._line_starts[node.lineno - 1]
        self._edits.append((start, start, code.rstrip("\n") + "\n"))

    def result(self) -> str:
        out = self._raw
        last_start = len(out) + 1
        for start, end, code in sorted(self._edits, key=lambda e: (e[0], e[1]), reverse=True):
            if end > last_start:
                raise PatchError(f"{self.origin}: two patches overlap at byte {start}")
            out = out[:start] + code.encode("utf-8") + out[end:]
            last_start = start
        text = out.decode("utf-8")
        ast.parse(text, filename=self.origin)  # the result must still be Python
        return text
