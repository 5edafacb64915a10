"""What the conversion of an official CPSL/ProDA checkpoint takes from outside the file, importable without
TensorFlow (``scripts/convert_checkpoint.py`` reads it before parsing its arguments)."""

# The dilation rates of the head's 3x3 branches: not stored in the weights (official: 6/12/18/24).
OFFICIAL_ASPP_RATES = (6, 12, 18, 24)
# The command-line opt-out of the safe loader.
TRUST_FLAG = "--trust-checkpoint-code"
