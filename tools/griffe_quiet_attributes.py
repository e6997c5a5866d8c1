"""A griffe extension for the API reference (mkdocs.yml): leave out the class attributes that
have neither a docstring nor a type annotation.

The reference shows every public member, documented or not (``show_if_no_docstring``): a
method's signature says much. An attribute set in ``__init__`` without annotation or docstring
(``self.clock = clock``) would show as its bare name in an empty box; its class's docstring
says what it is.
"""

from __future__ import annotations

from typing import Any

import griffe


class QuietAttributes(griffe.Extension):
    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        quiet(pkg)


def quiet(obj: griffe.Object) -> None:
    for name, member in list(obj.members.items()):
        if member.is_alias:
            continue
        if (
            obj.is_class
            and member.is_attribute
            and member.docstring is None
            and member.annotation is None
        ):
            del obj.members[name]
        elif member.is_class or member.is_module:
            quiet(member)  # type: ignore[arg-type]
