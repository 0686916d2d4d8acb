"""SOPS-compatible encrypted files (age recipients): read and write them without a sops binary."""
