"""The kfp pipeline (wiring only), its compiler entry point and the local runner."""
