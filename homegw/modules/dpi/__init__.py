"""DPI IO module: per-device, per-application classification in XDP."""
