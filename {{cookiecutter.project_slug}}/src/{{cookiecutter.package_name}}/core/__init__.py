"""The parts every module relies on. Nothing here imports an optional module."""
