"""The serial diagnostics console: a technician's login on a UART or USB gadget port, read-only status from the
daemon's snapshot, and the few acts a field service needs (maintenance log, calibration, restart), every one of
them recorded in the access record. It runs as its own process, so nothing typed at it can hurt the reader."""
