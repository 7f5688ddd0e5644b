"""Training on MosaicML Composer. Composer is imported only inside this package."""
