"""mutualaid: public-safety agencies share CAD, ALPR and RMS data under written agreements."""

__version__ = "0.1.0"
