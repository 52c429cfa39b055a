"""Data: reading files (one meaning per suffix), QA sets, text corpora, the token cache, source mixtures.

Every module raises `DataError` with one line that names the file and the place in it.
"""

from .files import FileFormat, file_format, read_bytes, read_text
from .qa import QADataset, QAExample, keep_tail, load_qa

__all__ = ["FileFormat", "QADataset", "QAExample", "file_format", "keep_tail", "load_qa", "read_bytes", "read_text"]
