"""Example treatments, importable wherever remotemap is installed (so workers can load them).

``remotemap.examples.fmri`` needs numpy and nibabel.
"""
