"""YAML from inputs and files a workflow names, parsed in bounded time and memory.

PyYAML's safe loader still expands aliases (a "billion laughs" document of a few
hundred bytes takes seconds, ten times more per level) and composes nested collections
recursively (deep nesting ends in ``RecursionError``). :func:`check_events` reads
the event stream first and refuses aliases, deep nesting and too many nodes before
a single node is built; only then is the text loaded.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_events", "construct", "construct_located", "safe_loader"]


def safe_loader() -> Any:
    """libyaml's safe loader when PyYAML has it (the wheels do): the pure-Python
    scanner is slow on hostile flow nesting."""
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def check_events(text: str, *, max_depth: int, max_events: int, aliases: str, verdict: str) -> None:
    """Raise ValueError for an alias, nesting over ``max_depth`` or over ``max_events``
    events in ``text`` (``yaml.YAMLError`` for text that is not YAML).

    ``aliases`` says why aliases are refused, ``verdict`` what the text then is not;
    the message never quotes the text.
    """
    import yaml

    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=safe_loader())):
        if isinstance(event, yaml.AliasEvent):
            raise ValueError(f"uses YAML aliases, which {aliases}")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise ValueError(f"nests deeper than {max_depth} levels; {verdict}")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if count > max_events:
            raise ValueError(f"has more than {max_events} YAML nodes; {verdict}")


def construct(text: str, *, documents: bool = False) -> Any:
    """Load ``text`` (every document if ``documents``) after :func:`check_events`.

    The safe constructor fails on some values with whatever Python raises
    (``!!timestamp x`` is an AttributeError, ``2001-13-45`` a ValueError): those become
    one ValueError that does not quote the value. Syntax errors stay ``yaml.YAMLError``.
    """
    import yaml

    try:
        if documents:
            return list(yaml.load_all(text, Loader=safe_loader()))  # a safe loader
        return yaml.load(text, Loader=safe_loader())  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        raise
    except Exception:  # any constructor failure is the text's fault
        raise ValueError(
            "has a value YAML cannot read (a bad date, number or tag); quote it"
        ) from None


def construct_located(text: str) -> list[tuple[int, Any]]:
    """Every document of ``text`` with the line (0-based) its content starts on, after
    :func:`check_events`; errors as :func:`construct`."""
    import yaml

    loader = safe_loader()(text)
    found: list[tuple[int, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            found.append((node.start_mark.line, loader.construct_document(node)))
    except yaml.YAMLError:
        raise
    except Exception:  # any constructor failure is the text's fault
        raise ValueError(
            "has a value YAML cannot read (a bad date, number or tag); quote it"
        ) from None
    finally:
        loader.dispose()
    return found
