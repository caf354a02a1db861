"""Sphinx configuration for the flask-obitox documentation.

Build: ``pip install -e ".[docs]" && sphinx-build -W -b html docs docs/_build``. No
network access is needed: intersphinx is off and the theme ships its own assets.
"""

from __future__ import annotations

from pallets_sphinx_themes import get_version

project = "flask-obitox"
copyright = "flask-obitox contributors"
author = "flask-obitox contributors"
release, version = get_version("flask-obitox")

extensions = [
    "sphinx.ext.autodoc",
    "pallets_sphinx_themes",
]

# -- autodoc -------------------------------------------------------------------------
autoclass_content = "both"
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# -- HTML ----------------------------------------------------------------------------
html_theme = "flask"
html_static_path = ["_static"]
html_theme_options = {"index_sidebar_logo": False}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
html_title = f"flask-obitox Documentation ({version})"
html_show_sourcelink = False
html_copy_source = False
# The version banner asks PyPI for the latest release from the reader's browser; this
# package is not released yet.
version_banner = False
