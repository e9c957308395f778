"""Every file of a workspace: the run lock and staged commit, durable writes, manifests, the batch ledger and
registry files, the scored store's files, the model store's files and the published pointer. No other package
writes into a workspace."""
