"""Records: the v1 contract, readers, validation with quarantine, the identifier guard, the registry."""
