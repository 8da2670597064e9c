"""Document rendering for contracts: PDF (WeasyPrint), DOCX (python-docx), PAdES signatures
(pyHanko) and signature/seal images. Free of Flask and of the web app (STYLE.md §5)."""
