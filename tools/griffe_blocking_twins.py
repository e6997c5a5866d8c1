"""A griffe extension for the API reference (mkdocs.yml): show a blocking twin generated from
an async function (``browser_login = blocking(abrowser_login)``, see
``freshtoken._oauth.http.blocking``) as the function it is at run time: the async function's
parameters and return type, not async, with the twin's own docstring.

griffe reads the source without running it, so such a twin would otherwise show as an
attribute whose value is a call. Written once and generated, as httpcore generates its sync
code from its async code; documented as if written twice.
"""

from __future__ import annotations

from typing import Any

import griffe


class BlockingTwins(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        unfold(pkg)


def unfold(obj: griffe.Object) -> None:
    for name, member in list(obj.members.items()):
        if member.is_alias:
            continue
        if member.is_attribute:
            twin = _twin(obj, name, member)  # type: ignore[arg-type]
            if twin is not None:
                obj.set_member(name, twin)
        elif member.is_class or member.is_module:
            unfold(member)  # type: ignore[arg-type]


def _twin(parent: griffe.Object, name: str, attribute: griffe.Attribute) -> griffe.Function | None:
    value = attribute.value
    if not isinstance(value, griffe.ExprCall) or str(value.function) != "blocking":
        return None
    if len(value.arguments) != 1:
        return None
    source = parent.members.get(str(value.arguments[0]))
    if source is None or source.is_alias or not source.is_function:
        return None
    assert isinstance(source, griffe.Function)
    return griffe.Function(
        name,
        lineno=attribute.lineno,
        endlineno=attribute.endlineno,
        parameters=source.parameters,
        returns=source.returns,
        docstring=attribute.docstring,
        parent=parent,  # type: ignore[arg-type]
    )
