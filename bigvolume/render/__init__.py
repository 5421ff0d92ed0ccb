"""Previews: offscreen vtk rendering of volumes into PNG pictures."""
