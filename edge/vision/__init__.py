"""Plate detection and reading: TFLite models behind small, typed interfaces."""
