"""The data layer: the contract's schema, loaders, validation and the evaluation protocols."""
