"""escrowguard: a real-time fraud and risk scorer for escrow milestone-funding platforms."""

__version__ = "0.1.0"
