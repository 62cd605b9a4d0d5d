"""alpr-edge: automated license plate reader for edge devices."""

__version__ = "0.1.0"
