"""Vision: frame checks, face detector, the shared crop and normalisation, mask classifier, the core."""
