"""app.py's navigation: every page of PAGE_TABLE is there, and a missing page file is an error."""

from __future__ import annotations

import pytest

import app


def test_every_page_is_in_the_navigation():
    sections = app.pages()
    assert {s: len(pages) for s, pages in sections.items()} == {"Use": 3, "Models": 2, "Learn": 2}


def test_a_missing_page_file_is_an_error(monkeypatch):
    monkeypatch.setattr(app, "PAGE_TABLE", app.PAGE_TABLE + [("gone.py", "Gone", ":material/help:", "Learn")])
    with pytest.raises(FileNotFoundError, match="gone.py"):
        app.pages()
