"""The HDF5 data layer: session files of docs/data-format.md, read, validated and written back.

Shape legend: B trials, T bins, N channels, E external inputs.
"""

from autolfads.data.dataset import SessionData as SessionData
from autolfads.data.dataset import read_arrays as read_arrays
from autolfads.data.dataset import read_session as read_session
from autolfads.data.dataset import read_sessions as read_sessions
from autolfads.data.validate import ArraySource as ArraySource
from autolfads.data.validate import DataDims as DataDims
from autolfads.data.writer import write_session_outputs as write_session_outputs

__all__ = [
    "ArraySource",
    "DataDims",
    "SessionData",
    "read_arrays",
    "read_session",
    "read_sessions",
    "write_session_outputs",
]
