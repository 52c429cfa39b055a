"""Reports that look inside a trained compressor; `comprexit explain` is built from them.

    from comprexit.reporting import explain_text, write_page
    explanation = explain_text(reader, text)        # the compressor's own diagnostics, as arrays
    write_page(explanation, Path("plan.html"), Path("plan-plan.png"), Path("plan-layers.png"), "doc.txt")
"""

from .explain import Explanation, explain_text
from .explain_page import render_page, write_page

__all__ = ["Explanation", "explain_text", "render_page", "write_page"]
