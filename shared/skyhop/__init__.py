"""skyhop: bulk transfers between object stores through planned gateway routes."""

__version__ = "0.1.0"
