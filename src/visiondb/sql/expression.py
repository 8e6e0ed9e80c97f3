"""`sql.expression`: a SQL expression as a named function (a DuckDB macro), e.g. features → scorer chains."""
from __future__ import annotations

import re
from typing import Any

from ..core.config import Params
from ..core.entities import Function
from ..core.registry import FUNCTION_TYPES
from ..errors import ConfigError
from .statements import sql_tree
from .udf import create_macro

TRAILING_STAR = re.compile(r"\s+AS\s+\*\s*$", re.IGNORECASE)


class ExpressionParams(Params):
    expression: str
    args: list[str] | None = None


@FUNCTION_TYPES.register("sql.expression")
class SqlExpression(Function):
    """`name(arg, ...)` expands to the expression; args default to its free identifiers, in order of use."""

    Params = ExpressionParams
    params: ExpressionParams

    _args: list[str] | None = None

    @property
    def body(self) -> str:
        return TRAILING_STAR.sub("", self.params.expression.strip())

    def input_names(self) -> list[str]:
        if self._args is None:
            self._args = self.params.args if self.params.args is not None else free_identifiers(self.db, self.body)
        return self._args

    def register(self) -> None:
        for name in self.input_names():
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ConfigError(f"sql.expression arg {name!r} is not a valid identifier", field="params.args")
        create_macro(self.db, self.id, self.input_names(), self.body)

    def status(self) -> dict:
        return {"args": self.input_names(), "expression": self.body}


def free_identifiers(db: Any, expression: str) -> list[str]:
    """Column references of `SELECT <expression>`, found with DuckDB's own parser: lambda parameters (within
    their lambda) and the columns of subqueries are not arguments."""
    tree = sql_tree(db.cursor(), "SELECT " + expression)
    if tree.get("error"):
        raise ConfigError(
            f"sql.expression: cannot parse expression: {tree.get('error_message')}", field="params.expression"
        )
    names: list[str] = []

    def walk(node: Any, bound: frozenset[str]) -> None:
        if isinstance(node, list):
            for value in node:
                walk(value, bound)
            return
        if not isinstance(node, dict) or node.get("class") == "SUBQUERY":
            return
        if node.get("class") == "LAMBDA":
            walk(node.get("expr"), bound | lambda_parameters(node.get("lhs")))
            return
        if node.get("class") == "COLUMN_REF" and node.get("column_names"):
            name = node["column_names"][0]
            if name.lower() not in bound and name not in names:
                names.append(name)
        for value in node.values():
            walk(value, bound)

    walk(tree["statements"][0]["node"]["select_list"], frozenset())
    return names


def lambda_parameters(lhs: Any) -> frozenset[str]:
    """Lower-case names a lambda binds: one column reference, or several wrapped in a `row(...)` call."""
    if not isinstance(lhs, dict):
        return frozenset()
    if lhs.get("class") == "COLUMN_REF":
        return frozenset({lhs["column_names"][-1].lower()})
    return frozenset(
        a["expression"]["column_names"][-1].lower()
        for a in lhs.get("arguments", [])
        if a.get("expression", {}).get("class") == "COLUMN_REF"
    )
