"""The synthetic registry generator: de-identified records in the contract, with their true risks."""
