"""Graphs of the stored series: the windows each view shows, the store reads that reduce a
window to the graph's width, the device layout they are grouped by, and the SVG files."""
