"""Features in Feast: the one definition of each feature table (`compute`), publishing them
(`publish`), and the client serving reads them with (`client`). See feature_repo/README.md."""
