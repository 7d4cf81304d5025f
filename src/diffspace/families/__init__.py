"""Process families, one package each; `diffspace.process` imports those named in its FAMILY_MODULES."""
